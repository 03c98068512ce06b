/**
 * The data a supervisor works with and tells about: its validated
 * configuration, the events it publishes, the status of each task slot and the
 * summary of a supervision that ended well. Only types: the supervisor core
 * (`internal/loop.ts`) and its public face (`Supervisor.ts`) both depend on
 * this module, and neither on the other.
 *
 * @since 0.1.0
 */
import type * as Duration from "effect/Duration"
import type * as Option from "effect/Option"
import type { ExitReason, ExitRecord, NotReady, Recycled } from "./Errors.ts"
import type { ExitStatus } from "./ExitStatus.ts"
import type * as Listen from "./Listen.ts"
import type { Mode, OutputSink, Readiness } from "./ProcessSpawner.ts"
import type { RestartPolicy } from "./RestartPolicy.ts"
import type { TaskId } from "./TaskId.ts"

/**
 * Options after validation.
 *
 * @since 0.1.0
 * @category models
 */
export interface Config {
  readonly processes: number
  /** How `processes` was chosen when it was not given (one per CPU): logged at the start. */
  readonly processesReason?: string | undefined
  readonly mode: Mode
  readonly command: string
  readonly args: ReadonlyArray<string>
  readonly execArgv: ReadonlyArray<string> | undefined
  readonly env: Readonly<Record<string, string>>
  readonly cwd: string | undefined
  readonly stdio: "inherit" | "ignore" | "pipe"
  readonly onOutput: OutputSink | undefined
  readonly stopTimeout: Duration.Duration
  readonly ready: Readiness | { readonly delay: Duration.Duration }
  readonly readyTimeout: Duration.Duration
  /** Whether Node workers drain their HTTP servers on SIGTERM (`SpawnRequest.drain`). */
  readonly drain: boolean
  readonly policy: RestartPolicy
  /** The sockets to own: bound (or taken over) before any worker starts. */
  readonly listen: ReadonlyArray<Listen.Spec>
  /** Sockets the caller owns, handed to workers before those of `listen`. */
  readonly sockets: ReadonlyArray<Listen.Socket>
  /** The user and group ids the workers run as (undefined: the supervisor's own). */
  readonly uid?: number | undefined
  readonly gid?: number | undefined
  /** Heartbeats: the deadline once ready, and how often workers beat. */
  readonly heartbeat?: { readonly timeout: Duration.Duration; readonly interval: Duration.Duration } | undefined
  /** Recycle a worker whose group's resident memory stays above this many bytes. */
  readonly maxMemory?: number | undefined
  readonly memoryInterval: Duration.Duration
  /** Recycle a worker this long after it is ready, plus a jitter in `[0, lifetimeJitter]`. */
  readonly maxLifetime?: Duration.Duration | undefined
  readonly lifetimeJitter: Duration.Duration
  /** Warm spares to keep booted. */
  readonly spares: number
}

/**
 * What a supervisor tells its observers, in order.
 *
 * Every process it started has exactly one `Started` and, once reaped, one
 * `Exited` event, whatever ended it: its own exit, a `restart`, a scale-down
 * (`stopped`) or the supervisor stopping (`stopped`).
 *
 * @since 0.1.0
 * @category models
 */
export type Event =
  /** The supervisor listens: the first event when it owns sockets. */
  | { readonly _tag: "Listening"; readonly sockets: ReadonlyArray<Listen.Socket>; readonly at: number }
  | {
      readonly _tag: "Started"
      readonly taskId: TaskId
      readonly pid: number
      readonly at: number
      /** Set when a warm spare took the task id (it was started before, as `SpareStarted`). */
      readonly spare?: boolean | undefined
    }
  /** A warm spare booted: no task id, no traffic, until a slot takes it (`Started` with `spare`). */
  | { readonly _tag: "SpareStarted"; readonly pid: number; readonly at: number }
  /** A spare exited before any slot took it: it died, or was stopped (a reload refreshes spares, or the supervisor stops). */
  | {
      readonly _tag: "SpareExited"
      readonly pid: number
      readonly status: ExitStatus
      readonly at: number
      readonly stopped: boolean
    }
  | { readonly _tag: "Ready"; readonly taskId: TaskId; readonly pid: number; readonly at: number }
  | {
      readonly _tag: "Exited"
      readonly taskId: TaskId
      readonly pid: number
      readonly status: ExitStatus
      readonly at: number
      /** Whether the slot will be started again. */
      readonly restart: boolean
      /** Set when the supervisor stopped the worker because it was not ready in time. */
      readonly notReady: Option.Option<NotReady>
      /** Set when the worker was stopped by `restart` or `reload`: it is started again, spending no budget. */
      readonly requested?: boolean | undefined
      /** Set when the supervisor stopped the worker for good: it was stopping, or the slot was scaled away. */
      readonly stopped?: boolean | undefined
      /** Set when the supervisor ended the worker itself: not ready in time, unresponsive, or recycled. */
      readonly reason?: ExitReason | undefined
    }
  /** A worker stopped answering: it is sent `signal` for a diagnostic, then killed. */
  | {
      readonly _tag: "Unresponsive"
      readonly taskId: TaskId
      readonly pid: number
      readonly signal: string
      /** The JavaScript stack its event loop is stuck in, when it could be fetched (a Node worker, Linux). */
      readonly stack?: string | undefined
      readonly at: number
    }
  /** A worker is being recycled: a replacement starts (and takes over once ready). */
  | {
      readonly _tag: "Recycling"
      readonly taskId: TaskId
      readonly pid: number
      readonly reason: Recycled
      readonly at: number
    }
  /**
   * A spawn failed for want of a resource (`code`: `EMFILE`, `ENFILE`,
   * `EAGAIN`, `ENOMEM`; see `Errors.isShortage`) and is tried again after
   * `delay` (100 ms, doubling up to 5 s). `attempt` counts the failures of
   * this spawn so far (1 for the first). It spends no restart budget, and the
   * other workers keep running. `taskId` is the slot's, absent for a warm
   * spare (`spare`). `message` says what ran short, in plain words.
   */
  | {
      readonly _tag: "SpawnRetrying"
      readonly taskId?: TaskId | undefined
      readonly spare?: boolean | undefined
      readonly code: string
      readonly message: string
      readonly attempt: number
      readonly delay: Duration.Duration
      readonly at: number
    }
  | { readonly _tag: "Finished"; readonly at: number }

/**
 * A snapshot of one task slot.
 *
 * @since 0.1.0
 * @category models
 */
export interface SlotStatus {
  readonly taskId: TaskId
  /**
   * `starting` until ready, then `running`; `restarting` while waiting to
   * start again; `stopping` while the supervisor stops it for good (it is
   * stopping, or the slot is being scaled away); `exited` once its worker
   * exited normally and is not restarted; `stopped` once stopped for good.
   */
  readonly state: "starting" | "running" | "restarting" | "stopping" | "exited" | "stopped"
  readonly pid: Option.Option<number>
  readonly restarts: number
  readonly startedAt: Option.Option<number>
  readonly lastExit: Option.Option<ExitStatus>
  /**
   * During a surge reload, the replacement started beside the live worker
   * (`pid`), not serving yet: it takes the slot over once it is ready.
   */
  readonly replacement: Option.Option<number>
}

/**
 * What a supervision that ended well saw: the restarts it made and every exit.
 *
 * @since 0.1.0
 * @category models
 */
export interface Summary {
  readonly restarts: number
  /** Every exit seen, oldest first: the most recent 1,000 when there were more. */
  readonly exits: ReadonlyArray<ExitRecord>
}
