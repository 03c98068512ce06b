/**
 * What the Node spawners share: turning a started `ChildProcess` into a
 * `ProcessHandle` (exit as data, signals never sent after the reap, readiness,
 * decoded IPC messages, piped output line by line), and the scoped release.
 */
import type { ChildProcess } from "node:child_process"
import { StringDecoder } from "node:string_decoder"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { SpawnFailed } from "../../Errors.ts"
import * as ExitStatus from "../../ExitStatus.ts"
import * as Messages from "../../Messages.ts"
import { makeStop, type ProcessHandle, type SpawnRequest } from "../../ProcessSpawner.ts"

/** @internal */
export interface Started {
  readonly handle: ProcessHandle
  /** Completes when the process has exited and its stdio streams have closed. */
  readonly drained: Effect.Effect<void>
}

const DRAIN_TIMEOUT = Duration.millis(500)
const MAX_LINE = 1 << 20

/** @internal */
export const failed = (request: SpawnRequest, code: string | undefined, message: string): SpawnFailed =>
  new SpawnFailed({
    taskId: request.taskId,
    command: request.command,
    message: `cannot start child ${request.taskId} (${request.command}): ${message}`,
    ...(code === undefined ? {} : { code })
  })

/** @internal */
export const errorCode = (error: unknown): string | undefined =>
  typeof error === "object" && error !== null && "code" in error && typeof error.code === "string"
    ? error.code
    : undefined

/**
 * Calls `onLine` with each complete line of a byte stream as it arrives, and
 * with the unterminated rest when the stream ends. UTF-8 characters split
 * across chunks are decoded whole. A line longer than 1 MiB is passed on in
 * pieces, so a worker that never writes a newline cannot grow the primary's
 * memory.
 */
const splitLines = (stream: NodeJS.ReadableStream, onLine: (line: string) => void): void => {
  const decoder = new StringDecoder("utf8")
  let pending = ""
  stream.on("data", (chunk: Buffer) => {
    const text = pending + decoder.write(chunk)
    let start = 0
    for (let nl = text.indexOf("\n"); nl !== -1; nl = text.indexOf("\n", start)) {
      onLine(text.slice(start, nl))
      start = nl + 1
    }
    pending = text.slice(start)
    if (pending.length > MAX_LINE) {
      onLine(pending)
      pending = ""
    }
  })
  stream.on("end", () => {
    const rest = pending + decoder.end()
    pending = ""
    if (rest.length > 0) onLine(rest)
  })
}

/** Logs the 1st, 10th, 100th … dropped message of a worker: bounded however many arrive. */
const isPowerOfTen = (n: number): boolean => {
  while (n >= 10 && n % 10 === 0) n /= 10
  return n === 1
}

/**
 * Waits for the child to be spawned (or to fail to), then builds its handle.
 * `onListening` registers a callback for cluster's `'listening'` event.
 *
 * What the handle logs later (unrecognized IPC messages) is logged with the
 * context of the fiber that spawned the child, so it goes to the loggers,
 * log level and annotations of the supervisor that owns the worker.
 *
 * @internal
 */
export const attach = (
  request: SpawnRequest,
  child: ChildProcess,
  options: {
    readonly onListening?: ((notify: () => void) => void) | undefined
    readonly kill: (pid: number, signal: NodeJS.Signals) => void
  }
): Effect.Effect<Started, SpawnFailed> =>
  Effect.flatMap(Effect.context<never>(), (context) =>
    attachWith(request, child, options, (effect) => {
      Effect.runForkWith(context)(effect)
    })
  )

const attachWith = (
  request: SpawnRequest,
  child: ChildProcess,
  options: {
    readonly onListening?: ((notify: () => void) => void) | undefined
    readonly kill: (pid: number, signal: NodeJS.Signals) => void
  },
  log: (effect: Effect.Effect<void>) => void
): Effect.Effect<Started, SpawnFailed> =>
  Effect.callback<Started, SpawnFailed>((resume) => {
    const exited = Deferred.makeUnsafe<ExitStatus.ExitStatus>()
    const closed = Deferred.makeUnsafe<void>()
    const ready = Deferred.makeUnsafe<void>()
    let status: ExitStatus.ExitStatus | undefined
    let spawned = false
    let dropped = 0
    const markReady = () => Deferred.doneUnsafe(ready, Effect.void)
    if (request.readiness === "spawn") markReady()
    child.once("exit", (code, signal) => {
      status = ExitStatus.fromNode(code, signal)
      Deferred.doneUnsafe(exited, Effect.succeed(status))
    })
    child.once("close", () => Deferred.doneUnsafe(closed, Effect.void))
    child.on("error", (error) => {
      // Before 'spawn' this is a failure to start; afterwards (a failed kill or IPC send) the exit tells the rest.
      if (!spawned) resume(Effect.fail(failed(request, errorCode(error), error.message)))
    })
    if (request.readiness === "listening") options.onListening?.(markReady)
    child.once("spawn", () => {
      spawned = true
      const pid = child.pid!
      if (request.mode !== "command") {
        child.on("message", (message: unknown) => {
          const decoded = Messages.decode(message)
          if (decoded !== undefined) {
            if (request.readiness !== "spawn") markReady()
            return
          }
          dropped++
          if (isPowerOfTen(dropped)) {
            const sample = String(JSON.stringify(message)).slice(0, 80)
            log(
              Effect.logWarning(
                `child ${request.taskId} (pid ${pid}) sent an unrecognized IPC message (${dropped} dropped so far): ${sample}`
              ).pipe(Effect.annotateLogs({ taskId: request.taskId, pid }))
            )
          }
        })
      }
      if (request.stdio === "pipe" && request.onOutput !== undefined) {
        const onOutput = request.onOutput
        const emit = (stream: "stdout" | "stderr") => (line: string) =>
          onOutput({ taskId: request.taskId, pid, stream, line })
        if (child.stdout) splitLines(child.stdout, emit("stdout"))
        if (child.stderr) splitLines(child.stderr, emit("stderr"))
      }
      const exit = Deferred.await(exited)
      const exitStatus = Effect.sync(() => Option.fromUndefinedOr(status))
      const kill = (signal: NodeJS.Signals) =>
        Effect.sync(() => {
          if (status === undefined) options.kill(pid, signal)
        })
      resume(
        Effect.succeed({
          drained: Deferred.await(closed),
          handle: {
            taskId: request.taskId,
            pid,
            exit,
            exitStatus,
            ready: Deferred.await(ready),
            kill,
            stop: makeStop({
              taskId: request.taskId,
              pid,
              exit,
              exitStatus,
              signalGroup: kill,
              alive: Effect.sync(() => status === undefined),
              timeout: request.stopTimeout
            })
          }
        })
      )
    })
  })

/**
 * The release of a spawned child: stop it, then (with piped output) let its
 * last lines through, but never wait long on a grandchild holding the pipe.
 *
 * @internal
 */
export const release =
  (request: SpawnRequest) =>
  ({ drained, handle }: Started): Effect.Effect<void> =>
    handle.stop.pipe(
      Effect.andThen(request.stdio === "pipe" ? Effect.timeoutOption(drained, DRAIN_TIMEOUT) : Effect.void),
      Effect.asVoid
    )
