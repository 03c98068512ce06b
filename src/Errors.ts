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
 * One exit seen by the supervisor: which slot, which process, how it ended
 * and when (epoch milliseconds, from `Clock`). `notReady` is set when the
 * supervisor stopped the worker because it was not ready in time.
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
 * A worker process could not be started at all: the executable does not
 * exist, is not executable, or the system refused to create a process
 * (`EAGAIN`, `EMFILE`). `code` is the system error code when there is one.
 *
 * @since 0.1.0
 * @category errors
 */
export class SpawnFailed extends Data.TaggedError("SpawnFailed")<{
  readonly taskId: number
  readonly command: string
  readonly code?: string
  readonly message: string
}> {}

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
