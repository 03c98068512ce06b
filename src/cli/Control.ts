/**
 * Control from another terminal, as `pm2 status`, `supervisorctl` and
 * `einhornsh` offer: `prefork` listens on a Unix socket that only its user
 * may use (mode 0600, in a directory of mode 0700), and `prefork ctl` talks
 * to it.
 *
 * - The socket is `$XDG_RUNTIME_DIR/prefork/prefork.sock` when that variable
 *   is set, else `/tmp/prefork-<uid>/prefork.sock`; `--control <path>`
 *   chooses another, `--control off` none. It is removed when prefork exits.
 * - A stale socket file (nothing answers on it) is replaced. One that a
 *   running prefork answers on is left to it: with the default path, this
 *   prefork then runs without control (and says so); with an explicit
 *   `--control`, it is a usage error.
 * - The protocol is one JSON object per line each way: `{"cmd":"status"}`,
 *   `{"cmd":"restart","task":1}`, `{"cmd":"reload"}`, `{"cmd":"scale","processes":4}`;
 *   answers are `{"ok":true,…}` or `{"ok":false,"error":"…"}`. Several
 *   clients may be connected at once.
 *
 * @since 0.1.0
 */
import { chmodSync, lstatSync, mkdirSync, readdirSync, readFileSync, statSync, unlinkSync } from "node:fs"
import * as Net from "node:net"
import * as Path from "node:path"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type { SupervisorHandle } from "../Supervisor.ts"
import { TaskId } from "../TaskId.ts"
import * as Status from "./Status.ts"

/**
 * Where `prefork` listens and `prefork ctl` connects, unless told otherwise.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultPath = (env: NodeJS.ProcessEnv = process.env): string =>
  env["XDG_RUNTIME_DIR"] !== undefined && env["XDG_RUNTIME_DIR"] !== ""
    ? Path.join(env["XDG_RUNTIME_DIR"], "prefork", "prefork.sock")
    : Path.join("/tmp", `prefork-${process.getuid?.() ?? "user"}`, "prefork.sock")

/**
 * A worker's resource use: CPU % over a short sample and the resident memory
 * of its whole process group (Linux, from `/proc`; `null` elsewhere).
 *
 * @since 0.1.0
 * @category models
 */
export interface Usage {
  readonly cpuPercent: number | null
  readonly rssBytes: number | null
}

const CLK_TCK = 100
const PAGE = 4096

/** `[pgrp, utime + stime ticks, rss pages]` of a process, from `/proc/<pid>/stat`. */
const stat = (pid: string): readonly [number, number, number] | undefined => {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, "latin1")
    const fields = text.slice(text.lastIndexOf(")") + 2).split(" ")
    // After "(comm)": state(0) ppid(1) pgrp(2) … utime(11) stime(12) … rss(21)
    return [Number(fields[2]), Number(fields[11]) + Number(fields[12]), Number(fields[21])]
  } catch {
    return undefined
  }
}

/** CPU ticks and RSS pages of every process in each of these groups. */
const groups = (pgids: ReadonlySet<number>): Map<number, { ticks: number; pages: number }> => {
  const totals = new Map<number, { ticks: number; pages: number }>()
  let entries: Array<string>
  try {
    entries = readdirSync("/proc").filter((e) => /^\d+$/.test(e))
  } catch {
    return totals
  }
  for (const pid of entries) {
    const s = stat(pid)
    if (s === undefined || !pgids.has(s[0])) continue
    const t = totals.get(s[0]) ?? { ticks: 0, pages: 0 }
    totals.set(s[0], { ticks: t.ticks + s[1], pages: t.pages + s[2] })
  }
  return totals
}

/**
 * Samples the workers' groups twice, `sampleMillis` apart: CPU % (100 % is
 * one core) and RSS.
 *
 * @since 0.1.0
 * @category constructors
 */
export const usage = (pids: ReadonlyArray<number>, sampleMillis = 200): Effect.Effect<Map<number, Usage>> =>
  Effect.gen(function* () {
    const wanted = new Set(pids)
    const first = groups(wanted)
    yield* Effect.sleep(sampleMillis)
    const second = groups(wanted)
    const result = new Map<number, Usage>()
    for (const pid of pids) {
      const a = first.get(pid)
      const b = second.get(pid)
      result.set(pid, {
        // CPU seconds used over the sample's seconds: 100 % is one core busy all along.
        cpuPercent:
          a === undefined || b === undefined
            ? null
            : Math.round(Math.max(0, (b.ticks - a.ticks) / CLK_TCK / (sampleMillis / 1000)) * 1000) / 10,
        rssBytes: b === undefined ? null : b.pages * PAGE
      })
    }
    return result
  })

/**
 * One status row with the worker's resource use, as `prefork ctl status`
 * receives it.
 *
 * @since 0.1.0
 * @category models
 */
export interface StatusRow extends Status.Row, Usage {}

type Request =
  | { readonly cmd: "status" }
  | { readonly cmd: "restart"; readonly task: number }
  | { readonly cmd: "reload" }
  | { readonly cmd: "scale"; readonly processes: number }

const answer = (handle: SupervisorHandle, request: Request): Effect.Effect<Record<string, unknown>> => {
  switch (request.cmd) {
    case "status":
      return Effect.gen(function* () {
        const slots = yield* handle.status
        const now = Date.now()
        const rows = Status.rows(slots, now)
        const use = yield* usage(rows.flatMap((r) => (r.pid === null ? [] : [r.pid])))
        const workers: Array<StatusRow> = rows.map((r) => ({
          ...r,
          ...(r.pid === null ? { cpuPercent: null, rssBytes: null } : use.get(r.pid)!)
        }))
        const spares = yield* handle.spares
        return { ok: true, processes: handle.processes, workers, spares }
      })
    case "restart": {
      if (!Number.isInteger(request.task) || request.task < 0 || request.task >= handle.processes) {
        return Effect.succeed({ ok: false, error: `no worker with task id ${String(request.task)}` })
      }
      return Effect.as(handle.restart(TaskId(request.task)), { ok: true })
    }
    case "reload":
      return handle.reload().pipe(
        Effect.as({ ok: true }),
        Effect.catch((error) => Effect.succeed({ ok: false, error: error.message }))
      )
    case "scale":
      return handle.scale(request.processes).pipe(
        Effect.map(() => ({ ok: true, processes: handle.processes })),
        Effect.catch((error) => Effect.succeed({ ok: false, error: error.message }))
      )
  }
}

const parseRequest = (line: string): Request | string => {
  let value: unknown
  try {
    value = JSON.parse(line)
  } catch {
    return "not JSON"
  }
  if (typeof value !== "object" || value === null || !("cmd" in value)) return 'expected {"cmd": …}'
  const v = value as Record<string, unknown>
  switch (v["cmd"]) {
    case "status":
    case "reload":
      return { cmd: v["cmd"] }
    case "restart":
      return typeof v["task"] === "number" ? { cmd: "restart", task: v["task"] } : "restart needs a task id"
    case "scale":
      return typeof v["processes"] === "number" ? { cmd: "scale", processes: v["processes"] } : "scale needs processes"
    default:
      return `unknown command ${JSON.stringify(v["cmd"])}`
  }
}

/** Whether a process answers on the socket path. */
const answers = (path: string): Effect.Effect<boolean> =>
  Effect.callback<boolean>((resume) => {
    const probe = Net.connect(path)
    probe.once("connect", () => {
      probe.destroy()
      resume(Effect.succeed(true))
    })
    probe.once("error", () => resume(Effect.succeed(false)))
  })

/**
 * Serves the control socket at `path` for as long as the scope lasts; fails
 * with a message when it cannot (another prefork answers there, the
 * directory cannot be made private).
 *
 * @since 0.1.0
 * @category constructors
 */
export const serve = (handle: SupervisorHandle, path: string): Effect.Effect<void, string, Scope.Scope> =>
  Effect.gen(function* () {
    const dir = Path.dirname(path)
    yield* Effect.try({
      try: () => {
        mkdirSync(dir, { recursive: true, mode: 0o700 })
        // An existing directory of ours is made private too: only its user reaches the socket in it.
        if (statSync(dir).uid === process.getuid?.()) chmodSync(dir, 0o700)
      },
      catch: (error) => `cannot make ${dir} private: ${String(error)}`
    })
    let exists = false
    try {
      exists = lstatSync(path).isSocket()
    } catch {
      exists = false
    }
    if (exists) {
      if (yield* answers(path)) return yield* Effect.fail(`another prefork answers on ${path}`)
      // Stale: left by a prefork that did not exit cleanly.
      try {
        unlinkSync(path)
      } catch {
        // gone meanwhile
      }
    }
    const context = yield* Effect.context<never>()
    const run = Effect.runForkWith(context)
    const clients = new Set<Net.Socket>()
    const server = Net.createServer((socket) => {
      clients.add(socket)
      socket.once("close", () => clients.delete(socket))
      socket.setEncoding("utf8")
      let pending = ""
      socket.on("error", () => {})
      socket.on("data", (chunk: string) => {
        pending += chunk
        if (pending.length > 1 << 16) return void socket.destroy()
        for (let nl = pending.indexOf("\n"); nl !== -1; nl = pending.indexOf("\n")) {
          const line = pending.slice(0, nl)
          pending = pending.slice(nl + 1)
          const request = parseRequest(line)
          const reply = (body: Record<string, unknown>) => {
            if (!socket.destroyed) socket.write(`${JSON.stringify(body)}\n`)
          }
          if (typeof request === "string") reply({ ok: false, error: request })
          else run(Effect.flatMap(answer(handle, request), (body) => Effect.sync(() => reply(body))))
        }
      })
    })
    yield* Effect.acquireRelease(
      Effect.callback<void, string>((resume) => {
        server.once("error", (error) => resume(Effect.fail(`cannot listen on ${path}: ${error.message}`)))
        server.listen(path, () => {
          try {
            chmodSync(path, 0o600)
            resume(Effect.void)
          } catch (error) {
            resume(Effect.fail(`cannot make ${path} private: ${String(error)}`))
          }
        })
      }),
      () =>
        Effect.callback<void>((resume) => {
          server.close(() => resume(Effect.void))
          // Clients still connected are let go: the socket is closing with prefork.
          for (const client of clients) client.destroy()
          try {
            unlinkSync(path)
          } catch {
            // gone already
          }
        })
    )
  })
