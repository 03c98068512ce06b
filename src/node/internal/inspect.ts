/**
 * The JavaScript stack of a Node worker whose event loop is blocked.
 *
 * `SIGUSR1` makes Node start its inspector on a thread of its own, even while
 * the main thread spins; heartbeat workers have `--inspect-port=0`, so it
 * listens on a port of its own choosing on 127.0.0.1. This module finds that
 * port (the worker's socket inodes in `/proc/<pid>/fd`, matched against the
 * listening sockets of `/proc/<pid>/net/tcp`), asks `/json/list` for the
 * debugger's target, connects, and sends `Debugger.enable` then
 * `Debugger.pause`: V8 interrupts the running JavaScript and reports where
 * it is. Measured here: ~200 ms from the signal to the stack, for a worker
 * spinning in `for (;;) {}`.
 *
 * The worker is untrusted: a program that handles `SIGUSR1` itself and opens a
 * server of its own is what this module finds then. So only a socket on
 * 127.0.0.1 that appeared after the signal is considered; it must answer as
 * Node's inspector does (`/json/version` names `node.js/`, the target's id is
 * a UUID, its `webSocketDebuggerUrl` is exactly `ws://127.0.0.1:<that
 * port>/<that id>`), or it is refused; no URL the worker gives is followed
 * (the WebSocket goes to the port already checked); every read is capped
 * ({@link MAX_HTTP_BODY}, {@link MAX_MESSAGE}, {@link MAX_WS_TOTAL}); and
 * every request and the WebSocket are cut at the deadline.
 *
 * Linux only (it reads `/proc`), and best effort: any failure, or the time
 * running out, gives `undefined` and leaves nothing open.
 */
import type * as Crypto from "node:crypto"
import { readdirSync, readFileSync, readlinkSync } from "node:fs"
import type * as Http from "node:http"
import * as Net from "node:net"

/** The most an inspector's `/json/version` or `/json/list` answer may be (Node's are under 1 KiB). */
export const MAX_HTTP_BODY = 64 * 1024

/**
 * The most one WebSocket message may be; a larger one (a `scriptParsed` with
 * an inline source map) is skipped without being buffered.
 */
export const MAX_MESSAGE = 1024 * 1024

/** The most read from the WebSocket in all: past it the capture gives up. */
export const MAX_WS_TOTAL = 32 * 1024 * 1024

/** The inspector's default host, in `/proc/net/tcp`'s hex (host byte order, either endianness). */
const LOOPBACK = new Set(["0100007F", "7F000001"])

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

/** The TCP ports a process listens on at 127.0.0.1, by socket inode, from `/proc`. */
const listening = (pid: number): Map<string, number> => {
  const ports = new Map<string, number>()
  const inodes = new Set<string>()
  try {
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      try {
        const match = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))
        if (match !== null) inodes.add(match[1]!)
      } catch {
        // closed meanwhile
      }
    }
  } catch {
    return ports
  }
  let text: string
  try {
    text = readFileSync(`/proc/${pid}/net/tcp`, "latin1")
  } catch {
    return ports
  }
  for (const line of text.split("\n").slice(1)) {
    const fields = line.trim().split(/\s+/)
    // local_address is field 1 (hex ip:port), st field 3 (0A: LISTEN), inode field 9.
    if (fields.length <= 9 || fields[3] !== "0A" || !inodes.has(fields[9]!)) continue
    const [ip, port] = fields[1]!.split(":")
    if (ip !== undefined && port !== undefined && LOOPBACK.has(ip.toUpperCase())) {
      ports.set(fields[9]!, Number.parseInt(port, 16))
    }
  }
  return ports
}

interface CallFrame {
  readonly functionName: string
  readonly url: string
  readonly location: { readonly scriptId: string; readonly lineNumber: number; readonly columnNumber: number }
}

/** A name from the worker, as it goes into a log line: at most 1,024 characters, control characters (newlines, escapes) as `?`. */
const clean = (text: string): string => text.slice(0, 1024).replace(/\p{Cc}/gu, "?")

const format = (frames: ReadonlyArray<CallFrame>, scripts: ReadonlyMap<string, string>): string =>
  frames
    .slice(0, 200)
    .map((f) => {
      const url = clean(String(f.url) || scripts.get(f.location.scriptId) || "<unknown>")
      const name = clean(String(f.functionName) || "<anonymous>")
      return `    at ${name} (${url}:${Number(f.location.lineNumber) + 1}:${Number(f.location.columnNumber) + 1})`
    })
    .join("\n")

/**
 * `node:http`, imported on the first capture only: importing it from an ES
 * module loads Node's fetch implementation too (undici), 50 ms and more at
 * every start of a `prefork` that may never capture a stack.
 */
let http: Promise<typeof Http> | undefined

/** `node:crypto` (the WebSocket's key and masks), imported on the first capture too: ~7 ms at every start otherwise. */
let crypto: Promise<typeof Crypto> | undefined

/** GET `path` on 127.0.0.1:`port`: the JSON body of a 200, at most {@link MAX_HTTP_BODY} bytes, or a rejection. */
const getJson = async (port: number, path: string, signal: AbortSignal): Promise<unknown> => {
  const { get } = await (http ??= import("node:http"))
  return new Promise((resolve, reject) => {
    const request = get(
      {
        host: "127.0.0.1",
        port,
        path,
        agent: false,
        signal,
        maxHeaderSize: 8192,
        headers: { host: `127.0.0.1:${port}` }
      },
      (response) => {
        if (response.statusCode !== 200) {
          request.destroy()
          return reject(new Error(`status ${response.statusCode}`))
        }
        const chunks: Array<Buffer> = []
        let size = 0
        response.on("data", (chunk: Buffer) => {
          size += chunk.length
          if (size > MAX_HTTP_BODY) {
            request.destroy()
            return reject(new Error(`more than ${MAX_HTTP_BODY} bytes`))
          }
          chunks.push(chunk)
        })
        response.once("end", () => {
          try {
            resolve(JSON.parse(Buffer.concat(chunks).toString("utf8")))
          } catch (error) {
            reject(error)
          }
        })
        response.once("error", reject)
      }
    )
    request.once("error", reject)
  })
}

/** The target id of Node's inspector on `port`, if that is what answers there. */
const inspectorTarget = async (port: number, signal: AbortSignal): Promise<string | undefined> => {
  const version = (await getJson(port, "/json/version", signal)) as { readonly Browser?: unknown } | null
  if (typeof version?.Browser !== "string" || !version.Browser.startsWith("node.js/")) return undefined
  const targets = await getJson(port, "/json/list", signal)
  if (!Array.isArray(targets) || targets.length !== 1) return undefined
  const target = targets[0] as { readonly id?: unknown; readonly webSocketDebuggerUrl?: unknown } | null
  const id = target?.id
  if (typeof id !== "string" || !UUID.test(id)) return undefined
  // The URL is checked, never followed: the WebSocket goes to the port and id already known.
  return target?.webSocketDebuggerUrl === `ws://127.0.0.1:${port}/${id}` ? id : undefined
}

/** A client WebSocket frame (masked, as RFC 6455 requires): small text messages only. */
const frame = (text: string, mask: Buffer): Buffer => {
  const payload = Buffer.from(text, "utf8")
  const head = payload.length < 126 ? Buffer.from([0x81, 0x80 | payload.length]) : Buffer.alloc(4)
  if (payload.length >= 126) {
    head[0] = 0x81
    head[1] = 0x80 | 126
    head.writeUInt16BE(payload.length, 2)
  }
  for (let i = 0; i < payload.length; i++) payload[i]! ^= mask[i % 4]!
  return Buffer.concat([head, mask, payload])
}

/**
 * A minimal WebSocket client for the inspector's protocol, with hard caps:
 * the handshake is checked, server frames must be unmasked, a message larger
 * than {@link MAX_MESSAGE} is skipped as it streams by, and past
 * {@link MAX_WS_TOTAL} bytes (or any protocol error, or the peer closing) it
 * calls `fail`. (Node's own `WebSocket` buffers a whole message, of any size.)
 */
const openWebSocket = (
  { createHash, randomBytes }: typeof Crypto,
  port: number,
  id: string,
  on: { readonly open: () => void; readonly message: (text: string) => void; readonly fail: () => void }
): { readonly send: (text: string) => void; readonly close: () => void } => {
  const key = randomBytes(16).toString("base64")
  const accept = createHash("sha1").update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest("base64")
  const socket = Net.connect({ host: "127.0.0.1", port })
  let total = 0
  let handshake: Buffer | undefined = Buffer.alloc(0)
  let pending: Buffer = Buffer.alloc(0)
  // The message being read: its parts (unless skipped), its size so far.
  let parts: Array<Buffer> = []
  let size = 0
  let skipping = false
  // The frame whose payload is streaming by: bytes left, and whether it is data (text/continuation).
  let left = 0
  let data = false
  let fin = false
  const fail = () => {
    socket.destroy()
    on.fail()
  }
  const endFrame = () => {
    if (!data || !fin) return
    if (!skipping) on.message(Buffer.concat(parts).toString("utf8"))
    parts = []
    size = 0
    skipping = false
  }
  const frames = (chunk: Buffer) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk])
    for (let guard = 0; guard < 100_000 && !socket.destroyed; guard++) {
      if (left > 0) {
        const take = Math.min(left, pending.length)
        if (take === 0) return
        if (data && !skipping) parts.push(pending.subarray(0, take))
        pending = pending.subarray(take)
        left -= take
        if (left === 0) endFrame()
        continue
      }
      if (pending.length < 2) return
      const opcode = pending[0]! & 0x0f
      fin = (pending[0]! & 0x80) !== 0
      if ((pending[1]! & 0x80) !== 0) return fail()
      let length = pending[1]! & 0x7f
      let offset = 2
      if (length === 126) {
        if (pending.length < 4) return
        length = pending.readUInt16BE(2)
        offset = 4
      } else if (length === 127) {
        if (pending.length < 10) return
        if (pending.readUInt32BE(2) !== 0) return fail()
        length = pending.readUInt32BE(6)
        offset = 10
      }
      if (opcode === 0x8) return fail()
      data = opcode === 0x1 || opcode === 0x0
      if (!data && opcode !== 0x9 && opcode !== 0xa) return fail()
      if (data) {
        size += length
        if (size > MAX_MESSAGE) {
          skipping = true
          parts = []
        }
      }
      pending = pending.subarray(offset)
      left = length
      if (left === 0) endFrame()
    }
  }
  socket.once("connect", () =>
    socket.write(
      `GET /${id} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`
    )
  )
  socket.on("data", (chunk: Buffer) => {
    total += chunk.length
    if (total > MAX_WS_TOTAL) return fail()
    if (handshake === undefined) return frames(chunk)
    handshake = Buffer.concat([handshake, chunk])
    const end = handshake.indexOf("\r\n\r\n")
    if (end === -1) {
      if (handshake.length > 8192) fail()
      return
    }
    const head = handshake.subarray(0, end).toString("latin1").split("\r\n")
    const rest = handshake.subarray(end + 4)
    handshake = undefined
    const accepted = head.some((line) => /^sec-websocket-accept:\s*(\S+)\s*$/i.exec(line)?.[1] === accept)
    if (!(head[0] ?? "").startsWith("HTTP/1.1 101 ") || !accepted) return fail()
    on.open()
    if (rest.length > 0) frames(rest)
  })
  socket.once("error", fail)
  socket.once("close", fail)
  return {
    send: (text) => void socket.write(frame(text, randomBytes(4))),
    close: () => {
      socket.removeAllListeners("close")
      socket.destroy()
    }
  }
}

/**
 * Sends the worker `pid` its `SIGUSR1` (with `signal`) and fetches its stack
 * within `withinMillis`; `undefined` when it cannot be had in time, or when
 * what listens is not Node's inspector. The inspector's port is the socket
 * the worker listens on at 127.0.0.1 after the signal and did not before (a
 * worker also listens on its own ports, or on the supervisor's sockets).
 *
 * @internal
 */
export const signalAndCapture = (
  pid: number,
  withinMillis: number,
  signal: () => void
): Promise<string | undefined> => {
  if (process.platform !== "linux") {
    signal()
    return Promise.resolve(undefined)
  }
  const before = listening(pid)
  signal()
  return new Promise((resolve) => {
    const timers: Array<ReturnType<typeof setTimeout>> = []
    const abort = new AbortController()
    let socket: { readonly close: () => void } | undefined
    let done = false
    const finish = (stack: string | undefined) => {
      if (done) return
      done = true
      for (const timer of timers) clearTimeout(timer)
      abort.abort()
      socket?.close()
      resolve(stack)
    }
    timers.push(setTimeout(() => finish(undefined), withinMillis))
    const connect = async (port: number) => {
      const id = await inspectorTarget(port, abort.signal)
      const modules = await (crypto ??= import("node:crypto"))
      if (id === undefined || done) return finish(undefined)
      const scripts = new Map<string, string>()
      const ws = openWebSocket(modules, port, id, {
        open: () => {
          ws.send(JSON.stringify({ id: 1, method: "Debugger.enable" }))
          ws.send(JSON.stringify({ id: 2, method: "Debugger.pause" }))
        },
        message: (text) => {
          try {
            const message = JSON.parse(text) as {
              readonly method?: string
              readonly params?: {
                readonly scriptId?: string
                readonly url?: string
                readonly callFrames?: ReadonlyArray<CallFrame>
              }
            }
            if (message.method === "Debugger.scriptParsed" && typeof message.params?.scriptId === "string") {
              if (scripts.size < 100_000) scripts.set(message.params.scriptId, String(message.params.url ?? ""))
            } else if (message.method === "Debugger.paused") {
              const frames = message.params?.callFrames
              finish(Array.isArray(frames) ? format(frames, scripts) : undefined)
            }
          } catch {
            finish(undefined)
          }
        },
        fail: () => finish(undefined)
      })
      socket = ws
    }
    // The inspector starts on its own thread once the signal arrives: look for its port every 10 ms.
    const look = () => {
      if (done) return
      const port = [...listening(pid)].find(([inode]) => !before.has(inode))?.[1]
      if (port === undefined) {
        timers.push(setTimeout(look, 10))
        return
      }
      connect(port).catch(() => finish(undefined))
    }
    look()
  })
}
