/**
 * The control protocol of `prefork` (see `Control.ts`), without a socket:
 * request lines cut from a byte stream with a size cap ({@link Lines}), a
 * strict parser ({@link parse}) and the answers ({@link makeResponder}).
 *
 * One JSON object per line each way: `{"cmd":"status"}`,
 * `{"cmd":"restart","task":1}`, `{"cmd":"reload"}`,
 * `{"cmd":"scale","processes":4}`, `{"cmd":"info"}` (who this prefork is:
 * name, pid, uptime, workers ready of wanted, command), `{"cmd":"stop"}` (a
 * graceful stop, as SIGTERM); answers are `{"ok":true,…}` or
 * `{"ok":false,"error":"…"}`, exactly one per request line. Anything else —
 * a line over {@link MAX_LINE} bytes, bytes that are not JSON, another
 * shape, an unknown command or field, a number that is not a safe integer
 * or out of range — is an error answer for that request alone: nothing
 * reaches the supervisor.
 *
 * `status` samples the workers' CPU and memory in `/proc` for 200 ms. The
 * sample is shared: requests that arrive while one is taken get its result,
 * so many clients asking at once cost one sample, and the `/proc` scan yields
 * to the event loop every few hundred entries.
 *
 * @since 0.1.0
 */
import { readdirSync, readFileSync } from "node:fs"
import * as Clock from "effect/Clock"
import { monotonicMillis } from "../ProcessSpawner.ts"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import { MAX_PROCESSES, type SupervisorHandle } from "../Supervisor.ts"
import { TaskId } from "../TaskId.ts"
import * as Status from "./Status.ts"

/**
 * The longest request line, in bytes (without its newline). A request is a
 * few dozen bytes; a longer line is refused without being buffered further.
 *
 * @since 0.1.0
 * @category constants
 */
export const MAX_LINE = 4096

/**
 * A request that is refused: not JSON, not a request, or a value out of
 * bounds. Its message is the error answered to the client.
 *
 * @since 0.1.0
 * @category errors
 */
export class BadRequest extends Data.TaggedError("BadRequest")<{ readonly reason: string }> {
  override get message(): string {
    return this.reason
  }
}

/**
 * A request, once parsed.
 *
 * @since 0.1.0
 * @category models
 */
export type Request =
  | { readonly cmd: "status" }
  | { readonly cmd: "restart"; readonly task: number }
  | { readonly cmd: "reload" }
  | { readonly cmd: "scale"; readonly processes: number }
  | { readonly cmd: "info" }
  | { readonly cmd: "stop" }

/**
 * An answer: one JSON line.
 *
 * @since 0.1.0
 * @category models
 */
export type Reply =
  | ({ readonly ok: true } & { readonly [field: string]: unknown })
  | { readonly ok: false; readonly error: string }

/**
 * The error answer for a refusal.
 *
 * @since 0.1.0
 * @category constructors
 */
export const failure = (error: string): Reply => ({ ok: false, error })

/** The fields each command takes besides `cmd`. */
const FIELDS: Readonly<Record<Request["cmd"], ReadonlyArray<string>>> = {
  status: [],
  reload: [],
  info: [],
  stop: [],
  restart: ["task"],
  scale: ["processes"]
}

/** A value as an error message shows it: short, whatever it is. */
const show = (value: unknown): string => {
  const text = typeof value === "number" ? String(value) : (JSON.stringify(value) ?? String(value))
  return text.length > 40 ? `${text.slice(0, 40)}…` : text
}

/**
 * Parses one request line (without its newline). Values the protocol can
 * bound by itself are checked here: `processes` is a safe integer from 1 to
 * `MAX_PROCESSES`, `task` a safe integer >= 0 (whether that worker exists is
 * the responder's question).
 *
 * @since 0.1.0
 * @category parsing
 */
export const parse = (line: string): Result.Result<Request, BadRequest> => {
  const bad = (reason: string) => Result.fail(new BadRequest({ reason }))
  let value: unknown
  try {
    value = JSON.parse(line)
  } catch {
    return bad("not JSON")
  }
  if (typeof value !== "object" || value === null || Array.isArray(value) || !Object.hasOwn(value, "cmd")) {
    return bad('expected {"cmd": …}')
  }
  const fields = value as Record<string, unknown>
  const cmd = fields["cmd"]
  if (typeof cmd !== "string" || !Object.hasOwn(FIELDS, cmd)) return bad(`unknown command ${show(cmd)}`)
  const known = FIELDS[cmd as Request["cmd"]]
  for (const key of Object.keys(fields)) {
    if (key !== "cmd" && !known.includes(key)) return bad(`unexpected field ${show(key)} for ${cmd}`)
  }
  switch (cmd) {
    case "status":
    case "reload":
    case "info":
    case "stop":
      return Result.succeed({ cmd })
    case "restart": {
      const task = fields["task"]
      if (task === undefined) return bad("restart needs a task id")
      if (typeof task !== "number" || !Number.isSafeInteger(task) || task < 0) {
        return bad(`no worker with task id ${show(task)}`)
      }
      return Result.succeed({ cmd, task })
    }
    default: {
      const processes = fields["processes"]
      if (processes === undefined) return bad("scale needs processes")
      if (
        typeof processes !== "number" ||
        !Number.isSafeInteger(processes) ||
        processes < 1 ||
        processes > MAX_PROCESSES
      ) {
        return bad(`processes must be a whole number from 1 to ${MAX_PROCESSES}, got ${show(processes)}`)
      }
      return Result.succeed({ cmd: "scale", processes })
    }
  }
}

/**
 * A line longer than {@link MAX_LINE}: the connection is answered an error
 * and closed, the rest of the line never read.
 *
 * @since 0.1.0
 * @category errors
 */
export class LineTooLong extends Data.TaggedError("LineTooLong")<{ readonly max: number }> {
  override get message(): string {
    return `request line longer than ${this.max} bytes`
  }
}

/**
 * The request lines of one connection, cut from its bytes: at most one line
 * plus one chunk is held, since the reader takes a line before it reads on.
 *
 * @since 0.1.0
 * @category models
 */
export class Lines {
  private buffer: Buffer = Buffer.alloc(0)
  readonly maxLine: number

  constructor(maxLine: number = MAX_LINE) {
    this.maxLine = maxLine
  }

  /** Adds bytes read from the connection. */
  push(chunk: Buffer): void {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk])
  }

  /** Bytes held that are not yet a whole line. */
  get pending(): number {
    return this.buffer.length
  }

  /** The next whole line (a trailing CR dropped), `undefined` until one is there, or `LineTooLong`. */
  next(): string | undefined | LineTooLong {
    const nl = this.buffer.indexOf(10)
    if (nl > this.maxLine || (nl === -1 && this.buffer.length > this.maxLine)) {
      this.buffer = Buffer.alloc(0)
      return new LineTooLong({ max: this.maxLine })
    }
    if (nl === -1) return undefined
    const end = nl > 0 && this.buffer[nl - 1] === 13 ? nl - 1 : nl
    const line = this.buffer.subarray(0, end).toString("utf8")
    this.buffer = this.buffer.subarray(nl + 1)
    return line
  }
}

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

/**
 * One status row with the worker's resource use, as `prefork ctl status`
 * receives it.
 *
 * @since 0.1.0
 * @category models
 */
export interface StatusRow extends Status.Row, Usage {}

const CLK_TCK = 100
const PAGE = 4096
/** `/proc` entries read between two yields to the event loop. */
const SCAN_SLICE = 256

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

/** CPU ticks and RSS pages of every process in each of these groups, yielding every {@link SCAN_SLICE} entries. */
const groups = (pgids: ReadonlySet<number>): Effect.Effect<Map<number, { ticks: number; pages: number }>> =>
  Effect.gen(function* () {
    const totals = new Map<number, { ticks: number; pages: number }>()
    if (pgids.size === 0) return totals
    let entries: Array<string>
    try {
      entries = readdirSync("/proc").filter((e) => /^\d+$/.test(e))
    } catch {
      return totals
    }
    for (let i = 0; i < entries.length; i++) {
      if (i > 0 && i % SCAN_SLICE === 0) yield* Effect.yieldNow
      const s = stat(entries[i]!)
      if (s === undefined || !pgids.has(s[0])) continue
      const t = totals.get(s[0]) ?? { ticks: 0, pages: 0 }
      totals.set(s[0], { ticks: t.ticks + s[1], pages: t.pages + s[2] })
    }
    return totals
  })

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
    const first = yield* groups(wanted)
    yield* Effect.sleep(sampleMillis)
    const second = yield* groups(wanted)
    const result = new Map<number, Usage>()
    for (const pid of pids) {
      const a = first.get(pid)
      const b = second.get(pid)
      result.set(pid, {
        // CPU seconds used over the sample's seconds: 100 % is one core busy all along.
        cpuPercent:
          a === undefined || b === undefined || sampleMillis <= 0
            ? null
            : Math.round(Math.max(0, (b.ticks - a.ticks) / CLK_TCK / (sampleMillis / 1000)) * 1000) / 10,
        rssBytes: b === undefined ? null : b.pages * PAGE
      })
    }
    return result
  })

/**
 * How a responder answers.
 *
 * @since 0.1.0
 * @category models
 */
export interface ResponderOptions {
  /** The CPU sample of `status`, in milliseconds (default 200). */
  readonly sampleMillis?: number | undefined
  /** Who this prefork is, for `info`: its name and the command its workers run (default: no name, no command). */
  readonly name?: string | undefined
  readonly command?: ReadonlyArray<string> | undefined
  /**
   * What `stop` does, once (a later `stop` is answered without doing it
   * again); without it, `stop` is answered with an error. It should begin the
   * stop and return: the answer is sent when it returns.
   */
  readonly stop?: Effect.Effect<void> | undefined
}

/**
 * The answer to `info`: who a prefork is, for `prefork ctl ls`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Info {
  readonly name: string | null
  readonly pid: number
  /** Since the responder was made (when prefork began to serve control), on a monotonic clock. */
  readonly uptimeMillis: number
  /** Workers running (ready) and wanted. */
  readonly ready: number
  readonly processes: number
  readonly command: ReadonlyArray<string>
}

/**
 * Answers request lines for one supervisor: exactly one reply per line, never
 * a failure. Build it once per supervisor: its `status` sample is shared by
 * every request that waits on it.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeResponder = (
  handle: SupervisorHandle,
  options: ResponderOptions = {}
): Effect.Effect<(line: string) => Effect.Effect<Reply>> =>
  Effect.gen(function* () {
    const monotonic = Effect.clockWith((clock) => Effect.sync(() => monotonicMillis(clock)))
    const startedAt = yield* monotonic
    let stopAsked = false
    const info: Effect.Effect<Reply> = Effect.gen(function* () {
      const slots = yield* handle.status
      const body: Info = {
        name: options.name ?? null,
        pid: process.pid,
        uptimeMillis: Math.max(0, Math.round((yield* monotonic) - startedAt)),
        ready: slots.filter((s) => s.state === "running").length,
        processes: handle.processes,
        command: options.command ?? []
      }
      return { ok: true, ...body }
    })
    const stop: Effect.Effect<Reply> = Effect.suspend(() => {
      if (options.stop === undefined) return Effect.succeed(failure("stop is not available here"))
      if (stopAsked) return Effect.succeed<Reply>({ ok: true, pid: process.pid })
      stopAsked = true
      return Effect.as(options.stop, { ok: true, pid: process.pid } as const)
    })
    const status: Effect.Effect<Reply> = Effect.gen(function* () {
      const slots = yield* handle.status
      const rows = Status.rows(slots, yield* Clock.currentTimeMillis)
      const use = yield* usage(
        rows.flatMap((r) => (r.pid === null ? [] : [r.pid])),
        options.sampleMillis ?? 200
      )
      const workers: Array<StatusRow> = rows.map((r) => ({
        ...r,
        ...(r.pid === null ? { cpuPercent: null, rssBytes: null } : use.get(r.pid)!)
      }))
      const spares = yield* handle.spares
      return { ok: true, processes: handle.processes, workers, spares }
    })
    // One sample at a time: whoever asks while it is taken waits for it and gets the same answer.
    const sharedStatus = yield* Effect.cachedWithTTL(status, 0)
    const answer = (request: Request): Effect.Effect<Reply> => {
      switch (request.cmd) {
        case "status":
          return sharedStatus
        case "info":
          return info
        case "stop":
          return stop
        case "restart":
          return request.task >= handle.processes
            ? Effect.succeed(failure(`no worker with task id ${request.task}`))
            : Effect.as(handle.restart(TaskId(request.task)), { ok: true } as const)
        case "reload":
          return handle.reload().pipe(
            Effect.as<Reply>({ ok: true }),
            Effect.catch((error) => Effect.succeed(failure(error.message)))
          )
        case "scale":
          return handle.scale(request.processes).pipe(
            Effect.map((): Reply => ({ ok: true, processes: handle.processes })),
            Effect.catch((error) => Effect.succeed(failure(error.message)))
          )
      }
    }
    return (line: string) => {
      const request = parse(line)
      return Result.isFailure(request) ? Effect.succeed(failure(request.failure.message)) : answer(request.success)
    }
  })
