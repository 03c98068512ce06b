/**
 * The JavaScript stack of a Node worker whose event loop is blocked.
 *
 * `SIGUSR1` makes Node start its inspector on a thread of its own, even while
 * the main thread spins; heartbeat workers have `--inspect-port=0`, so it
 * listens on a port of its own choosing on 127.0.0.1. This module finds that
 * port (the worker's socket inodes in `/proc/<pid>/fd`, matched against the
 * listening sockets of `/proc/<pid>/net/tcp`), asks `/json/list` for the
 * debugger's URL, connects, and sends `Debugger.enable` then
 * `Debugger.pause`: V8 interrupts the running JavaScript and reports where
 * it is. Measured here: ~200 ms from the signal to the stack, for a worker
 * spinning in `for (;;) {}`.
 *
 * Linux only (it reads `/proc`), and best effort: any failure, or the time
 * running out, gives `undefined` and leaves nothing open.
 */
import { readdirSync, readFileSync, readlinkSync } from "node:fs"

/** The TCP ports a process listens on, by socket inode, from `/proc`. */
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
  for (const table of ["tcp", "tcp6"]) {
    let text: string
    try {
      text = readFileSync(`/proc/${pid}/net/${table}`, "latin1")
    } catch {
      continue
    }
    for (const line of text.split("\n").slice(1)) {
      const fields = line.trim().split(/\s+/)
      // local_address is field 1 (hex ip:port), st field 3 (0A: LISTEN), inode field 9.
      if (fields.length > 9 && fields[3] === "0A" && inodes.has(fields[9]!)) {
        ports.set(fields[9]!, Number.parseInt(fields[1]!.split(":")[1]!, 16))
      }
    }
  }
  return ports
}

interface CallFrame {
  readonly functionName: string
  readonly url: string
  readonly location: { readonly scriptId: string; readonly lineNumber: number; readonly columnNumber: number }
}

const format = (frames: ReadonlyArray<CallFrame>, scripts: ReadonlyMap<string, string>): string =>
  frames
    .map((f) => {
      const url = f.url || scripts.get(f.location.scriptId) || "<unknown>"
      return `    at ${f.functionName || "<anonymous>"} (${url}:${f.location.lineNumber + 1}:${f.location.columnNumber + 1})`
    })
    .join("\n")

/**
 * Sends the worker `pid` its `SIGUSR1` (with `signal`) and fetches its stack
 * within `withinMillis`; `undefined` when it cannot be had in time. The
 * inspector's port is the socket the worker listens on after the signal and
 * did not before (a worker also listens on its own ports, or on the
 * supervisor's sockets).
 *
 * @internal
 */
export const signalAndCapture = (
  pid: number,
  withinMillis: number,
  signal: () => void
): Promise<string | undefined> => {
  if (process.platform !== "linux" || typeof globalThis.WebSocket !== "function") {
    signal()
    return Promise.resolve(undefined)
  }
  const before = listening(pid)
  signal()
  return new Promise((resolve) => {
    const timers: Array<ReturnType<typeof setTimeout>> = []
    let socket: WebSocket | undefined
    let done = false
    const finish = (stack: string | undefined) => {
      if (done) return
      done = true
      for (const timer of timers) clearTimeout(timer)
      try {
        socket?.close()
      } catch {
        // already closed
      }
      resolve(stack)
    }
    timers.push(setTimeout(() => finish(undefined), withinMillis))
    const connect = async (port: number) => {
      const targets = (await (await fetch(`http://127.0.0.1:${port}/json/list`)).json()) as ReadonlyArray<{
        readonly webSocketDebuggerUrl?: string
      }>
      const url = targets[0]?.webSocketDebuggerUrl
      if (url === undefined || done) return finish(undefined)
      const scripts = new Map<string, string>()
      const ws = new WebSocket(url)
      socket = ws
      ws.addEventListener("error", () => finish(undefined))
      ws.addEventListener("open", () => {
        ws.send(JSON.stringify({ id: 1, method: "Debugger.enable" }))
        ws.send(JSON.stringify({ id: 2, method: "Debugger.pause" }))
      })
      ws.addEventListener("message", (event) => {
        try {
          const message = JSON.parse(String(event.data)) as {
            readonly method?: string
            readonly params?: {
              readonly scriptId?: string
              readonly url?: string
              readonly callFrames?: ReadonlyArray<CallFrame>
            }
          }
          if (message.method === "Debugger.scriptParsed" && message.params?.scriptId !== undefined) {
            scripts.set(message.params.scriptId, message.params.url ?? "")
          } else if (message.method === "Debugger.paused") {
            finish(format(message.params?.callFrames ?? [], scripts))
          }
        } catch {
          finish(undefined)
        }
      })
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
