/**
 * The one OS boundary of the supervisor: start a worker process for a task id
 * and get a handle to it. Everything the supervisor knows about processes goes
 * through this service, so the same supervisor runs real processes
 * (`effect-prefork/node`) and scripted ones (`effect-prefork/testing`).
 *
 * A spawner's `spawn` is scoped: the process is started and its stop
 * finalizer registered in one uninterruptible step, and closing the scope
 * stops the process with {@link stop} (SIGTERM, the stop deadline, then
 * SIGKILL) and waits until it has been reaped.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import type { SpawnFailed } from "./Errors.ts"
import type { ExitStatus } from "./ExitStatus.ts"
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
   * With `stdio: "pipe"`: called with each complete line (without its newline)
   * in order, and with the last unterminated line when the stream ends, so a
   * crashing worker's last words are kept.
   */
  readonly onOutput?: ((line: OutputLine) => void) | undefined
  /** When the handle's `ready` completes. */
  readonly readiness: Readiness
  /** How long a worker may take to exit after SIGTERM before it gets SIGKILL. */
  readonly stopTimeout: Duration.Duration
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
}

/**
 * A signal name, such as `"SIGTERM"`.
 *
 * @since 0.1.0
 * @category models
 */
export type Signal = NodeJS.Signals

/**
 * A started worker process.
 *
 * @since 0.1.0
 * @category models
 */
export interface ProcessHandle {
  readonly taskId: TaskId
  readonly pid: number
  /** Waits until the process has exited and been reaped, and says how it ended. */
  readonly exit: Effect.Effect<ExitStatus>
  /** Completes when the worker is ready (see `SpawnRequest.readiness`); never, if it exits first. */
  readonly ready: Effect.Effect<void>
  /** The exit status if the process has already been reaped. */
  readonly exitStatus: Effect.Effect<Option.Option<ExitStatus>>
  /**
   * Sends a signal to the worker's process group. Once the process has been
   * reaped this does nothing, so a pid the system has reused is never signaled.
   */
  readonly kill: (signal: Signal) => Effect.Effect<void>
}

/**
 * @since 0.1.0
 * @category services
 */
export class ProcessSpawner extends Context.Service<
  ProcessSpawner,
  {
    /**
     * Starts a worker. The returned handle's process is stopped with
     * {@link stop} when the scope closes, unless it has already exited.
     */
    readonly spawn: (request: SpawnRequest) => Effect.Effect<ProcessHandle, SpawnFailed, Scope.Scope>
  }
>()("effect-prefork/ProcessSpawner") {}

/**
 * Stops a process the way every spawner does when its scope closes: nothing if
 * it has already exited; otherwise SIGTERM, then SIGKILL if it is still
 * running after `timeout`, then wait until it is reaped. Returns how it ended.
 *
 * @since 0.1.0
 * @category utils
 */
export const stop = (handle: ProcessHandle, timeout: Duration.Duration): Effect.Effect<ExitStatus> =>
  Effect.suspend(() => {
    // Idempotent: a stop already under way (a restart, say, when the supervisor stops too) is awaited,
    // never repeated, so a worker gets SIGTERM once.
    const running = stopping.get(handle)
    if (running !== undefined) return Deferred.await(running)
    const done = Deferred.makeUnsafe<ExitStatus>()
    stopping.set(handle, done)
    return Effect.onExit(stopOnce(handle, timeout), (exit) => Effect.sync(() => Deferred.doneUnsafe(done, exit)))
  })

const stopping = new WeakMap<ProcessHandle, Deferred.Deferred<ExitStatus>>()

const stopOnce = (handle: ProcessHandle, timeout: Duration.Duration): Effect.Effect<ExitStatus> =>
  Effect.flatMap(handle.exitStatus, (done) => {
    if (Option.isSome(done)) return Effect.succeed(done.value)
    return handle.kill("SIGTERM").pipe(
      Effect.andThen(Effect.timeoutOption(handle.exit, timeout)),
      Effect.flatMap((exited) =>
        Option.isSome(exited)
          ? Effect.succeed(exited.value)
          : Effect.logWarning(
              `child ${handle.taskId} (pid ${handle.pid}) still running ${Duration.toMillis(timeout)} ms after SIGTERM, sending SIGKILL`
            ).pipe(
              Effect.annotateLogs({ taskId: handle.taskId, pid: handle.pid }),
              Effect.andThen(handle.kill("SIGKILL")),
              Effect.andThen(handle.exit)
            )
      )
    )
  })
