/**
 * The typed failures of a supervisor. Each is a `Data.TaggedError`, so
 * callers recover by tag:
 *
 * ```ts
 * Supervisor.run(options).pipe(
 *   Effect.catchTag("TooManyRestarts", (e) => Effect.logError(e.message))
 * )
 * ```
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"
import { describe, type ExitStatus } from "./ExitStatus.ts"

// `Data`, not `Schema`: these classes are on the import path of every primary, and loading
// `effect/Schema` costs a process ~13 MiB and ~100 ms (docs/production.md). Nothing decodes them.

/**
 * A worker did not become ready within the readiness timeout. The supervisor
 * stopped it, and its exit counts against the budget like a crash (unlike
 * PM2, where a timeout counts as ready).
 *
 * @since 0.1.0
 * @category errors
 */
export class NotReady extends Data.TaggedError("NotReady")<{
  readonly taskId: number
  readonly pid: number
  readonly timeoutMillis: number
}> {
  override get message(): string {
    return `child ${this.taskId} (pid ${this.pid}) not ready within ${this.timeoutMillis} ms`
  }
}

/**
 * A worker stopped answering: no heartbeat from it for `timeoutMillis` (its
 * event loop was blocked, or it hung). The supervisor sent it a diagnostic
 * signal (`signal`: SIGUSR1 to a Node worker, so its inspector starts on a
 * thread of its own, and the supervisor fetches from it the JavaScript stack
 * the loop is stuck in, `stack`; SIGABRT to any other program, as gunicorn
 * does), then SIGKILL, and its exit counts against the budget like a crash.
 *
 * @since 0.1.0
 * @category errors
 */
export class Unresponsive extends Data.TaggedError("Unresponsive")<{
  readonly taskId: number
  readonly pid: number
  readonly timeoutMillis: number
  readonly signal: string
  /** The JavaScript stack a Node worker's event loop was stuck in, when it could be fetched (Linux). */
  readonly stack?: string
}> {
  override get message(): string {
    return `child ${this.taskId} (pid ${this.pid}) unresponsive: no heartbeat for ${this.timeoutMillis} ms`
  }
}

/**
 * A worker replaced on purpose, while healthy: its memory stayed above the
 * limit (`"memory"`, with the last sample and the limit, in bytes), or it
 * reached its lifetime (`"lifetime"`, with that lifetime, jitter included).
 * Recycling is a graceful, readiness-gated replacement and spends no budget.
 *
 * @since 0.1.0
 * @category models
 */
export class Recycled extends Data.TaggedClass("Recycled")<{
  readonly taskId: number
  readonly pid: number
  readonly reason: "memory" | "lifetime"
  readonly rssBytes?: number
  readonly limitBytes?: number
  readonly lifetimeMillis?: number
}> {
  get message(): string {
    return this.reason === "memory"
      ? `child ${this.taskId} (pid ${this.pid}) recycled: memory ${mib(this.rssBytes)} above ${mib(this.limitBytes)}`
      : `child ${this.taskId} (pid ${this.pid}) recycled: lifetime of ${this.lifetimeMillis} ms reached`
  }
}

const mib = (bytes: number | undefined): string => (bytes === undefined ? "?" : `${(bytes / 2 ** 20).toFixed(1)} MiB`)

/**
 * Why the supervisor ended a worker, when it did so itself: not ready in
 * time, unresponsive, or recycled.
 *
 * @since 0.1.0
 * @category models
 */
export type ExitReason = NotReady | Unresponsive | Recycled

/**
 * One exit seen by the supervisor: which slot, which process, how it ended
 * and when (epoch milliseconds, from `Clock`). `reason` is set when the
 * supervisor ended the worker itself (`NotReady`, `Unresponsive`, `Recycled`);
 * `notReady` is kept for a `NotReady` reason.
 *
 * @since 0.1.0
 * @category models
 */
export class ExitRecord extends Data.Class<{
  readonly taskId: number
  readonly pid: number
  readonly status: ExitStatus
  readonly at: number
  readonly notReady?: NotReady
  readonly reason?: ExitReason
}> {}

/**
 * The restart budget is spent: Tornado's `RuntimeError("Too many child
 * restarts, giving up")`. It carries how many restarts were made and every
 * abnormal exit seen (the most recent 1,000 in a long crash loop), the last
 * one being the exit that was not restarted.
 * (As in Tornado, that exit is still logged "…, restarting" just before the
 * supervisor finds the budget spent.)
 * Every worker has been stopped and reaped before this error surfaces.
 *
 * @since 0.1.0
 * @category errors
 */
export class TooManyRestarts extends Data.TaggedError("TooManyRestarts")<{
  readonly restarts: number
  readonly exits: ReadonlyArray<ExitRecord>
}> {
  override get message(): string {
    const last = this.exits.at(-1)
    const what =
      last === undefined
        ? ""
        : last.notReady !== undefined
          ? ` (last: ${last.notReady.message})`
          : ` (last: child ${last.taskId} (pid ${last.pid}) ${describe(last.status)})`
    return `Too many child restarts, giving up after ${this.restarts} restarts${what}`
  }
}

/**
 * The system error codes of a spawn that failed for want of a resource, not
 * because of the worker: too many open files in the primary (`EMFILE`) or in
 * the system (`ENFILE`), too many processes (`EAGAIN`: `ulimit -u`, a pids
 * cgroup), not enough memory (`ENOMEM`). Such a spawn may work a moment
 * later: the supervisor retries it (see {@link SpawnFailed}).
 *
 * @since 0.1.0
 * @category constants
 */
export const SHORTAGE_CODES: ReadonlyArray<string> = ["EMFILE", "ENFILE", "EAGAIN", "ENOMEM"]

/**
 * Whether a spawn's error code is a shortage ({@link SHORTAGE_CODES}): a
 * transient failure, worth retrying, rather than one that can never work.
 *
 * @example
 * ```ts
 * import { Errors } from "effect-prefork"
 *
 * Errors.isShortage("EMFILE") // true
 * Errors.isShortage("ENOENT") // false
 * ```
 *
 * @since 0.1.0
 * @category predicates
 */
export const isShortage = (code: string | undefined): boolean => code !== undefined && SHORTAGE_CODES.includes(code)

/**
 * A worker process could not be started: the executable does not exist
 * (`ENOENT`, also a missing `#!` interpreter), is not executable (`EACCES`),
 * its arguments are too long (`E2BIG`) — or the system lacked a resource
 * (`EMFILE`, `ENFILE`, `EAGAIN`, `ENOMEM`: `transient`). `code` is the system
 * error code when there is one.
 *
 * A supervisor never gives up on a transient failure: it retries the spawn
 * (100 ms, doubling up to 5 s, spending no restart budget, telling each retry
 * as a `SpawnRetrying` event) while the other workers keep running. Only a
 * spawn that can never work ends the supervision with this error, except in
 * a reload, whose replacement failing in any way is a `ReloadFailed`.
 *
 * @since 0.1.0
 * @category errors
 */
export class SpawnFailed extends Data.TaggedError("SpawnFailed")<{
  readonly taskId: number
  readonly command: string
  readonly code?: string
  readonly message: string
}> {
  /** Whether the system lacked a resource ({@link isShortage}): the same spawn may work later. */
  get transient(): boolean {
    return isShortage(this.code)
  }
}

/**
 * The options given to a supervisor are not valid. `field` names the option
 * and `message` says what was wrong with it.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidOptions extends Data.TaggedError("InvalidOptions")<{
  readonly field: string
  readonly message: string
}> {}

/**
 * A listening address could not be bound (`EADDRINUSE`, `EACCES` for a
 * privileged port, `EADDRNOTAVAIL` or `ENOTFOUND` for an address this machine
 * does not have, a Unix socket path that exists and is not a stale socket).
 * Nothing was started: the supervisor binds every address before any worker.
 *
 * @since 0.1.0
 * @category errors
 */
export class BindFailed extends Data.TaggedError("BindFailed")<{
  /** The address as given, such as `127.0.0.1:8080` or `unix:/run/app.sock`. */
  readonly address: string
  readonly code?: string
  readonly message: string
}> {}

/**
 * A rolling reload stopped: the replacement for `taskId` did not become ready
 * (it exited, or was not ready within the ready timeout). The old worker of
 * that slot was kept serving, and the slots after it were not reloaded. The
 * failed replacement spends no restart budget: the supervised service never
 * lost a worker, and an operator's reload is not a crash loop.
 *
 * @since 0.1.0
 * @category errors
 */
export class ReloadFailed extends Data.TaggedError("ReloadFailed")<{
  readonly taskId: number
  /** The replacement that failed, when it was started. */
  readonly pid?: number
  /** The slots reloaded before this one. */
  readonly reloaded: ReadonlyArray<number>
  readonly message: string
}> {}
