/**
 * The one OS boundary of the supervisor: start a worker process for a task id
 * and get a handle to it. Everything the supervisor knows about processes goes
 * through this service, so the same supervisor runs real processes
 * (`effect-prefork/node`) and scripted ones (`effect-prefork/testing`).
 *
 * A spawner's `spawn` is scoped: the process is started and its stop
 * finalizer registered in one uninterruptible step, and closing the scope
 * runs the handle's `stop` (SIGTERM to the process group, the stop deadline,
 * then SIGKILL) and waits until the leader is reaped and its group is empty.
 *
 * @since 0.1.0
 */
import type * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import type { BindFailed, SpawnFailed } from "./Errors.ts"
import type { ExitStatus } from "./ExitStatus.ts"
import type * as Listen from "./Listen.ts"
import type { TaskId } from "./TaskId.ts"

/**
 * How a worker is run:
 * - `"command"`: any executable with arguments (`child_process.spawn`, never a shell);
 * - `"module"`: a Node.js module run with the current `node`, with an IPC channel (`fork`);
 * - `"cluster"`: a Node.js script run as a `node:cluster` worker, sharing the primary's listening sockets.
 *
 * @since 0.1.0
 * @category models
 */
export type Mode = "command" | "module" | "cluster"

/**
 * When a spawner reports a worker ready: as soon as it is spawned, when it
 * sends the `Worker.ready` IPC message, or (cluster) when it starts listening
 * or sends that message.
 *
 * @since 0.1.0
 * @category models
 */
export type Readiness = "spawn" | "message" | "listening"

/**
 * What to start for one task slot.
 *
 * @since 0.1.0
 * @category models
 */
export interface SpawnRequest {
  readonly taskId: TaskId
  readonly mode: Mode
  /** The executable (`"command"`) or the module or script path (`"module"`, `"cluster"`). */
  readonly command: string
  readonly args: ReadonlyArray<string>
  /** Node options for `"module"` and `"cluster"` workers; defaults to the primary's `process.execArgv`. */
  readonly execArgv?: ReadonlyArray<string> | undefined
  /** Added to the primary's environment, with `PREFORK_TASK_ID` set last. */
  readonly env: Readonly<Record<string, string>>
  readonly cwd?: string | undefined
  /**
   * Where the worker's stdout and stderr go (stdin is always closed):
   * the primary's own (`"inherit"`), nowhere (`"ignore"`), or line by line to
   * `onOutput` (`"pipe"`).
   */
  readonly stdio: "inherit" | "ignore" | "pipe"
  /**
   * With `stdio: "pipe"`: called with each complete line (without its newline
   * or a `\r` before it) in order, and with the last unterminated line when
   * the stream ends, so a crashing worker's last words are kept. When it
   * returns an `Effect`, no more of that stream is read until the effect
   * completes: a slow consumer slows the worker (backpressure) instead of
   * growing the primary's memory. Without `onOutput`, piped output is read
   * and dropped, so a worker never blocks on a full pipe.
   */
  readonly onOutput?: OutputSink | undefined
  /** When the handle's `ready` completes. */
  readonly readiness: Readiness
  /** How long a worker may take to exit after SIGTERM before it gets SIGKILL. */
  readonly stopTimeout: Duration.Duration
  /**
   * The supervisor's listening sockets, handed to the worker as descriptors
   * 3, 4, … in this order, with `LISTEN_FDS`, `LISTEN_FDNAMES` and
   * `LISTEN_PID` (the worker's own pid) in its environment.
   */
  readonly sockets?: ReadonlyArray<Listen.Socket> | undefined
  /** The user id the worker runs as (the supervisor must be root to change it). */
  readonly uid?: number | undefined
  /** The group id the worker runs as; its supplementary groups are dropped. */
  readonly gid?: number | undefined
  /**
   * Ask the worker for heartbeats this often (see `ProcessHandle.lastHeartbeat`).
   * Module and cluster workers beat from their own event loop with no code of
   * their own (a blocked loop stops the beats); a command gets a pipe as
   * `PREFORK_HEARTBEAT_FD` (and the interval in milliseconds as
   * `PREFORK_HEARTBEAT_MS`) and beats by writing any byte to it.
   */
  readonly heartbeat?: Duration.Duration | undefined
  /**
   * Start a warm spare (module and cluster modes): `PREFORK_SPARE=1` instead
   * of a task id, which `ProcessHandle.activate` gives it later;
   * `Worker.taskId` waits until then.
   */
  readonly spare?: boolean | undefined
  /**
   * Node workers (module and cluster modes, and a command that is `node …`):
   * drain their HTTP servers on SIGTERM, serve the supervisor's sockets to a
   * `listen(port)` on their address, and say when they listen (readiness
   * `"listening"`), with no code of their own. Default `true`.
   */
  readonly drain?: boolean | undefined
}

/**
 * One line a worker wrote.
 *
 * @since 0.1.0
 * @category models
 */
export interface OutputLine {
  readonly taskId: TaskId
  readonly pid: number
  readonly stream: "stdout" | "stderr"
  readonly line: string
  /** Set for a line of a warm spare not yet given a task id (its `taskId` then means nothing). */
  readonly spare?: boolean | undefined
}

/**
 * Receives a worker's output line by line (see `SpawnRequest.onOutput`).
 *
 * @since 0.1.0
 * @category models
 */
export type OutputSink = (line: OutputLine) => void | Effect.Effect<void>

/**
 * A signal name, such as `"SIGTERM"`.
 *
 * @since 0.1.0
 * @category models
 */
export type Signal = NodeJS.Signals

/**
 * A started worker process: the leader of its own process group, and the
 * group with it. A worker is its whole process group.
 *
 * @since 0.1.0
 * @category models
 */
export interface ProcessHandle {
  readonly taskId: TaskId
  readonly pid: number
  /**
   * Waits until the leader has exited and been reaped, and what it wrote to
   * piped output has reached `onOutput` (a crash's last words come before the
   * news of its death; a spawner bounds that wait), and says how it ended.
   */
  readonly exit: Effect.Effect<ExitStatus>
  /** Completes when the worker is ready (see `SpawnRequest.readiness`); never, if it exits first. */
  readonly ready: Effect.Effect<void>
  /** The leader's exit status if it has already been reaped. */
  readonly exitStatus: Effect.Effect<Option.Option<ExitStatus>>
  /**
   * Sends a signal to the worker's process group. Once the leader has been
   * reaped this does nothing, so a pid the system has reused is never signaled.
   */
  readonly kill: (signal: Signal) => Effect.Effect<void>
  /**
   * Stops the worker and everything left of its process group (systemd's
   * `KillMode=control-group`): SIGTERM to the group, then SIGKILL to whatever
   * of it still lives at the stop timeout, then waits until the leader is
   * reaped and the group is empty. After the leader has exited by itself it
   * stops the members of its group that are left, the same way.
   *
   * It runs at most once per handle and, once begun, always completes: every
   * call (a `restart`, the supervisor stopping, the scope's release) awaits the
   * same run, and an interrupted caller only stops waiting. Succeeds with the
   * leader's exit status.
   */
  readonly stop: Effect.Effect<ExitStatus>
  /**
   * When the worker last beat, in milliseconds on the monotonic clock
   * (`monotonicMillis`: never the wall clock, which may be stepped), none
   * before its first beat or without `heartbeat`. A beat only stores the
   * time: the supervisor looks at it once per deadline, not per beat. Beats
   * that have arrived but are not read yet (a supervisor that did not run for
   * a while finds them waiting in its pipes) are read first, so a verdict
   * never comes before evidence already received.
   */
  readonly lastHeartbeat: Effect.Effect<Option.Option<number>>
  /**
   * The resident memory of the worker's whole process group, in bytes,
   * sampled now (`/proc` on Linux, `ps` elsewhere); none once it is gone.
   */
  readonly memory: Effect.Effect<Option.Option<number>>
  /**
   * Gives a spare (`SpawnRequest.spare`) its task id: one IPC message. The
   * handle's `taskId` is that id from then on.
   */
  readonly activate: (taskId: TaskId) => Effect.Effect<void>
  /**
   * Sends the leader alone a signal that makes it print a diagnostic before
   * it is killed as unresponsive, and says which: SIGUSR1 to a Node worker
   * (module and cluster modes: Node starts its inspector on a thread of its
   * own, so it answers even while the event loop is blocked), SIGABRT to any
   * other program (Python's faulthandler and Go print their stacks on it, as
   * gunicorn relies on). For a Node worker on Linux it then connects to that
   * inspector and fetches the JavaScript stack the loop is stuck in, within
   * `withinMillis`. Does nothing once the leader is reaped.
   */
  readonly diagnose: (withinMillis: number) => Effect.Effect<Diagnosis>
}

/**
 * What `ProcessHandle.diagnose` did: the signal it sent, and the JavaScript
 * stack of a blocked Node worker when it could fetch it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Diagnosis {
  readonly signal: Signal
  readonly stack?: string | undefined
}

/**
 * @since 0.1.0
 * @category services
 */
export class ProcessSpawner extends Context.Service<
  ProcessSpawner,
  {
    /**
     * Starts a worker. When the scope closes, the handle's `stop` runs and the
     * release waits for it: the leader and every member of its group are gone.
     */
    readonly spawn: (request: SpawnRequest) => Effect.Effect<ProcessHandle, SpawnFailed, Scope.Scope>
    /**
     * Binds and listens on every address, or takes over an inherited socket,
     * before any worker starts; fails with `BindFailed` naming the address,
     * having closed what it bound. When the scope closes the sockets are
     * closed (a Unix socket's file removed).
     */
    readonly listen: (
      specs: ReadonlyArray<Listen.Spec>
    ) => Effect.Effect<ReadonlyArray<Listen.Socket>, BindFailed, Scope.Scope>
  }
>()("effect-prefork/ProcessSpawner") {}

/**
 * What a spawner knows how to do with one process, from which
 * {@link makeStop} builds the handle's `stop`.
 *
 * @since 0.1.0
 * @category models
 */
export interface StopPrimitives {
  readonly taskId: TaskId
  /** Whether it is a spare not given a task id yet (its `taskId` then means nothing): the log says "spare". */
  readonly spare?: boolean | undefined
  readonly pid: number
  readonly exit: Effect.Effect<ExitStatus>
  readonly exitStatus: Effect.Effect<Option.Option<ExitStatus>>
  /** Signals the leader and its group (the group alone once the leader is reaped). */
  readonly signalGroup: (signal: Signal) => Effect.Effect<void>
  /** Whether the leader is unreaped or any member of its group still lives. */
  readonly alive: Effect.Effect<boolean>
  /** How many HTTP connections the worker last said it was draining, if it said (see `SpawnRequest.drain`). */
  readonly draining?: (() => number | undefined) | undefined
  readonly timeout: Duration.Duration
}

/** How often a stop looks again whether a group is empty: quickly at first, then every 100 ms. */
const pollDelay = (attempt: number): Duration.Duration => Duration.millis(Math.min(100, 5 * 2 ** attempt))

/**
 * Builds a handle's `stop` from a spawner's primitives: nothing to do if the
 * leader is reaped and its group empty; otherwise SIGTERM to the group, wait
 * up to `timeout` for the leader's exit and the group to empty, then SIGKILL
 * and wait again. It runs once, in a fiber of its own that no caller's
 * interruption reaches; every call awaits that run.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeStop = (p: StopPrimitives): Effect.Effect<ExitStatus> => {
  const gone: Effect.Effect<void> = Effect.flatMap(p.exit, () =>
    Effect.suspend(() => {
      let attempt = 0
      const loop: Effect.Effect<void> = Effect.flatMap(p.alive, (alive) =>
        alive ? Effect.flatMap(Effect.sleep(pollDelay(attempt++)), () => loop) : Effect.void
      )
      return loop
    })
  )
  const run: Effect.Effect<ExitStatus> = Effect.gen(function* () {
    const leaderGone = Option.isSome(yield* p.exitStatus)
    if (!(yield* p.alive)) return yield* p.exit
    yield* p.signalGroup("SIGTERM")
    const done = yield* Effect.timeoutOption(gone, p.timeout)
    if (Option.isNone(done)) {
      const what = Option.isSome(yield* p.exitStatus)
        ? leaderGone
          ? `processes of its group (pid ${p.pid} exited before) still running`
          : `(pid ${p.pid}) exited, processes of its group still running`
        : `(pid ${p.pid}) still running`
      const left = p.draining?.()
      const cut = left === undefined ? "" : ` while draining ${left} HTTP connection${left === 1 ? "" : "s"}`
      yield* Effect.logWarning(
        `${p.spare === true ? "spare" : `child ${p.taskId}`} ${what} ${Duration.toMillis(p.timeout)} ms after SIGTERM${cut}, sending SIGKILL`
      ).pipe(Effect.annotateLogs(p.spare === true ? { spare: true, pid: p.pid } : { taskId: p.taskId, pid: p.pid }))
      yield* p.signalGroup("SIGKILL")
      yield* gone
    }
    return yield* p.exit
  })
  let fiber: Fiber.Fiber<ExitStatus> | undefined
  // Started by the first caller, with its context (clock, logger), in a fiber no caller owns.
  return Effect.flatMap(Effect.context<never>(), (context) => {
    fiber ??= Effect.runForkWith(context)(Effect.uninterruptible(run))
    return Fiber.join(fiber)
  })
}

/**
 * The time scale of `ProcessHandle.lastHeartbeat`: the clock's monotonic
 * reading (`Clock.monotonicTimeNanos`) in milliseconds. A spawner stamps each
 * beat with it and the supervisor's deadlines read it, so a wall clock
 * stepped back or forward moves neither. Its origin is arbitrary: compare
 * readings, never show one.
 *
 * @since 0.1.0
 * @category models
 */
export const monotonicMillis = (clock: Clock.Clock): number => Number(clock.monotonicTimeNanosUnsafe()) / 1_000_000
