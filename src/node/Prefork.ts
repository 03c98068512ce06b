/**
 * Tornado's pattern for servers, on `node:cluster`: the same script runs as
 * the primary and as every worker. The primary supervises; the workers serve,
 * sharing the ports they listen on.
 *
 * - {@link forkProcesses} is the faithful port of `fork_processes`: in a
 *   worker it succeeds at once with `Option.some(taskId)`, and the code after
 *   it is the worker; in the primary it supervises and succeeds with
 *   `Option.none()` once every worker has exited normally.
 * - {@link run} is the Effect way: the primary supervises, each worker runs
 *   `worker(taskId)` with the `TaskId.Current` service provided, and exits
 *   with a code that follows its `Exit`.
 * - {@link runMain} runs either as a program's entry point: SIGINT and SIGTERM
 *   stop everything gracefully, and the primary then exits 0.
 *
 * A cluster worker interrupted by a signal dies of that signal after its
 * finalizers ran (it removes its handlers and raises the signal again, as Unix
 * programs do), so its primary sees `Signaled { SIGTERM }`: a worker someone
 * `kill`s is restarted with its task id, as Tornado restarts a child "killed by
 * signal 15", while one the primary stops is not (exits while stopping are
 * never restarts).
 *
 * @since 0.1.0
 */
import cluster from "node:cluster"
import { constants } from "node:os"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Runtime from "effect/Runtime"
import type * as Scope from "effect/Scope"
import type { BindFailed, InvalidOptions, SpawnFailed, TooManyRestarts } from "../Errors.ts"
import type * as Listen from "../Listen.ts"
import type * as Supervisor from "../Supervisor.ts"
import { Current, ENV_VAR, type TaskId } from "../TaskId.ts"
import * as Worker from "../Worker.ts"

/**
 * The supervisor, loaded only in the primary: a worker needs its task id and
 * nothing else, and loading the supervisor (and the half of Effect it uses)
 * would cost every worker tens of milliseconds and megabytes. (Node's module
 * cache makes every later call cheap.)
 */
const primary = Effect.promise(async () => {
  const [supervisor, spawner, listen, sockets] = await Promise.all([
    import("../Supervisor.ts"),
    import("./NodeProcessSpawner.ts"),
    import("../Listen.ts"),
    import("./internal/sockets.ts")
  ])
  return { Supervisor: supervisor, NodeProcessSpawner: spawner, Listen: listen, Sockets: sockets }
})

/**
 * The supervisor options of cluster mode: the script defaults to the running
 * one (`process.argv[1]`) with its arguments.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options extends Omit<Supervisor.Options, "command" | "mode" | "args"> {
  /** The worker script. Default: the script the primary is running. */
  readonly script?: string | undefined
  /** The worker's arguments. Default: the primary's own (`process.argv.slice(2)`). */
  readonly args?: ReadonlyArray<string> | undefined
}

/**
 * Is this process a cluster worker started by a supervisor?
 *
 * @since 0.1.0
 * @category predicates
 */
export const isWorker = (): boolean =>
  cluster.isWorker ||
  (process.send !== undefined &&
    (process.env[ENV_VAR] !== undefined || process.env[Worker.SPARE_ENV_VAR] === "1") &&
    process.env[FORKED] === "1")

/** Set in the workers `forkProcesses` and `run` start with `fork` (when sockets are bound): they are workers. */
const FORKED = "PREFORK_FORKED"

/** The sockets `bindSockets` holds in this process, which `forkProcesses` and `run` hand to their workers. */
const bound: Array<Listen.Socket> = []

/** The supervisors `forkProcesses` and `run` are running in this process: what SIGHUP under `runMain` reloads. */
const running = new Set<Supervisor.SupervisorHandle>()

/**
 * Reloads every supervisor `forkProcesses` and `run` are running in this
 * process (a surge: see `SupervisorHandle.reload`): what SIGHUP does under
 * {@link runMain}. A failed reload is logged; the workers it kept serve on.
 *
 * @since 0.1.0
 * @category running
 */
export const reloadAll: Effect.Effect<void> = Effect.suspend(() =>
  Effect.forEach(
    [...running],
    (handle) =>
      Effect.logInfo(
        `SIGHUP received: reloading ${handle.processes} process${handle.processes === 1 ? "" : "es"}`
      ).pipe(
        Effect.andThen(handle.reload()),
        Effect.andThen(Effect.logInfo("Reload finished")),
        Effect.catch((error) => Effect.logWarning(`Reload stopped: ${error.message}`))
      ),
    { discard: true }
  )
)

const supervise = (options: Options) =>
  Effect.flatMap(primary, ({ NodeProcessSpawner, Supervisor }) =>
    Effect.scoped(
      Effect.flatMap(Supervisor.start(supervisorOptions(options)), (handle) =>
        Effect.acquireUseRelease(
          Effect.sync(() => running.add(handle)),
          () => handle.await,
          () => Effect.sync(() => running.delete(handle))
        )
      )
    ).pipe(Effect.provide(NodeProcessSpawner.layer))
  )

const supervisorOptions = (options: Options): Supervisor.Options =>
  bound.length === 0
    ? {
        ...options,
        mode: "cluster",
        command: options.script ?? process.argv[1] ?? "",
        args: options.args ?? process.argv.slice(2)
      }
    : {
        // The primary's sockets are inherited by plain `fork` children: a node:cluster worker cannot serve them.
        ...options,
        mode: "module",
        command: options.script ?? process.argv[1] ?? "",
        args: options.args ?? process.argv.slice(2),
        env: { ...options.env, [FORKED]: "1" },
        sockets: [...bound, ...(options.sockets ?? [])]
      }

/**
 * Tornado's `bind_sockets(port, address)`: in the primary, binds and listens
 * on each address (a port number, or any `Listen` address) for as long as the
 * current scope lasts; `forkProcesses` and `run` then hand them to every
 * worker, which serves them (`server.listen({ fd })`). While every worker is
 * down, connections wait in the backlog: the port never refuses one. In a
 * worker, it returns the sockets the worker inherited, binding nothing.
 *
 * @example
 * ```ts
 * import { createServer } from "node:http"
 * import { Effect, Option } from "effect"
 * import { Prefork } from "effect-prefork/node"
 *
 * const program = Effect.gen(function*() {
 *   const sockets = yield* Prefork.bindSockets(8888)
 *   const id = yield* Prefork.forkProcesses(0)
 *   if (Option.isNone(id)) return // the primary: every worker exited normally
 *   for (const { fd } of sockets) createServer((_, res) => res.end(`task ${id.value}\n`)).listen({ fd })
 *   yield* Effect.never
 * })
 *
 * Prefork.runMain(Effect.scoped(program))
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const bindSockets = (
  ...addresses: ReadonlyArray<number | Listen.Input>
): Effect.Effect<
  ReadonlyArray<{ readonly fd: number; readonly name: string }>,
  BindFailed | InvalidOptions,
  Scope.Scope
> =>
  Effect.suspend(() => {
    if (isWorker()) return Effect.succeed(Worker.socketsFromEnv(process.env, process.pid))
    return Effect.gen(function* () {
      const { Listen, Sockets } = yield* primary
      const specs = yield* Listen.parseAll(addresses.map((a) => (typeof a === "number" ? { port: a } : a)))
      const sockets = yield* Sockets.listen(specs)
      yield* Effect.acquireRelease(
        Effect.sync(() => bound.push(...sockets)),
        () =>
          Effect.sync(() => {
            for (const socket of sockets) bound.splice(bound.indexOf(socket), 1)
          })
      )
      yield* Effect.logInfo(`Listening on ${sockets.map((s) => Listen.format(s.address)).join(", ")}`)
      return sockets
    })
  })

/** This worker's task id: a spare waits until it is given one (see `Worker.taskId`). */
const workerTaskId: Effect.Effect<TaskId> = Effect.flatMap(Worker.taskId, (id) =>
  Option.isSome(id)
    ? Effect.succeed(id.value)
    : Effect.die(new Error("a cluster worker without PREFORK_TASK_ID: was it started by effect-prefork?"))
)

/**
 * Tornado's `fork_processes(num_processes, max_restarts)`. In the primary it
 * supervises `processes` cluster workers of the running script and succeeds
 * with `Option.none()` once all of them exited normally, or fails with
 * `TooManyRestarts` after stopping them all. In a worker it succeeds at once
 * with `Option.some(taskId)` (a spare, when it is given its task id): what
 * follows is the worker's code. A worker
 * ignores SIGINT: a terminal's Ctrl-C reaches the whole process group, and
 * the primary then stops each worker once with SIGTERM.
 *
 * @example
 * ```ts
 * import { createServer } from "node:http"
 * import { Effect, Option } from "effect"
 * import { Prefork } from "effect-prefork/node"
 *
 * const program = Effect.gen(function*() {
 *   const id = yield* Prefork.forkProcesses(4, { maxRestarts: 100 })
 *   if (Option.isNone(id)) return // the primary: every worker exited normally
 *   createServer((_, res) => res.end(`task ${id.value}\n`)).listen(8080, "127.0.0.1")
 *   yield* Effect.never
 * })
 *
 * Prefork.runMain(program)
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const forkProcesses = (
  processes?: number | undefined,
  options: Options = {}
): Effect.Effect<Option.Option<TaskId>, TooManyRestarts | SpawnFailed | InvalidOptions | BindFailed> =>
  Effect.suspend(() =>
    isWorker()
      ? Effect.sync(() => {
          // Ctrl-C reaches the whole process group: leave it to the primary, which stops each worker once.
          process.on("SIGINT", ignoreSignal)
        }).pipe(Effect.andThen(workerTaskId), Effect.map(Option.some))
      : Effect.as(supervise({ ...options, processes }), Option.none<TaskId>())
  )

const LOST_PRIMARY_GRACE = 1000

const ignoreSignal = () => {}

/**
 * The exit code of a worker: 0 for success or for an interruption (by losing
 * the primary: no signal to die of), 1 for a failure or a defect.
 */
const workerExitCode = <A, E>(exit: Exit.Exit<A, E>): number =>
  Exit.isSuccess(exit) || Cause.hasInterruptsOnly(exit.cause) ? 0 : 1

/** Whether the program was interrupted and nothing else: then the signal that interrupted it is its death. */
const interruptedOnly = <A, E>(exit: Exit.Exit<A, E>): boolean =>
  Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause)

/**
 * Ends this process by `signal`, as a Unix program that caught a signal to
 * clean up does: with every listener of it removed (so its default action,
 * death, is back), it sends the signal to itself. Its parent then sees it
 * killed by the signal, not an exit code. Should the signal not end it, it
 * exits with the shell's code for that death, 128 + the signal's number.
 */
const dieOf = (signal: NodeJS.Signals): never => {
  process.removeAllListeners(signal)
  process.kill(process.pid, signal)
  return process.exit(128 + (constants.signals[signal] ?? 0))
}

/**
 * Runs `worker(taskId)` in this cluster worker and ends the process as the
 * result says. SIGTERM interrupts the worker: its finalizers run, then it
 * dies of SIGTERM — restarted if someone else sent it, a stop if the primary
 * did. Losing the primary interrupts it too, and it exits 0 within a second,
 * finalizers or not. SIGINT is ignored: when Ctrl-C reaches the whole process
 * group, the primary stops each worker once.
 */
const runWorker = <A, E, R>(
  worker: (id: TaskId) => Effect.Effect<A, E, R>
): Effect.Effect<never, never, Exclude<R, Current>> =>
  Effect.uninterruptibleMask((restore) =>
    Effect.gen(function* () {
      // A spare waits here for its task id; SIGTERM meanwhile is its default death (nothing to clean up yet).
      const id = yield* restore(workerTaskId)
      const fiber = yield* Effect.forkDetach(restore(Effect.provideService(worker(id), Current, id)))
      let signaled: NodeJS.Signals | undefined
      const onSignal = (signal: NodeJS.Signals) => {
        signaled ??= signal
        fiber.interruptUnsafe()
      }
      // Losing the primary: cluster's own 'disconnect' listener would exit at once, skipping the
      // finalizers. Tell it the disconnect is expected, run them, but never take more than a second.
      const lost = () => {
        setTimeout(() => process.exit(0), LOST_PRIMARY_GRACE).unref()
        fiber.interruptUnsafe()
      }
      if (cluster.worker !== undefined) cluster.worker.exitedAfterDisconnect = true
      process.on("SIGTERM", onSignal)
      process.on("SIGINT", ignoreSignal)
      process.prependListener("disconnect", lost)
      const exit = yield* Fiber.await(fiber)
      process.off("SIGTERM", onSignal)
      process.off("SIGINT", ignoreSignal)
      process.off("disconnect", lost)
      if (Exit.isFailure(exit) && !Cause.hasInterruptsOnly(exit.cause)) {
        yield* Effect.logError(`worker ${id} (pid ${process.pid}) failed`, exit.cause)
      }
      const signal = signaled
      return yield* Effect.sync(() =>
        signal !== undefined && interruptedOnly(exit) ? dieOf(signal) : process.exit(workerExitCode(exit))
      )
    })
  ) as Effect.Effect<never, never, Exclude<R, Current>>

/**
 * The Effect form: in the primary, supervise cluster workers of this script
 * and succeed with a summary once all exited normally; in each worker, run
 * `worker(taskId)` (the `TaskId.Current` service is provided) and exit with 0
 * on success, 1 on failure (logged with its cause).
 *
 * A worker interrupted by a signal (SIGTERM) dies of that signal after its
 * finalizers ran, so the primary sees `Signaled { SIGTERM }`: a worker killed
 * from outside is restarted with the same task id under the default policy,
 * as in Tornado ("killed by signal 15, restarting"), and one the primary stops
 * (the supervisor stopping, a restart, a scale-down) is not, since exits while
 * stopping are never restarts. A worker that loses its primary runs its
 * finalizers and exits 0 within a second. It ignores SIGINT: Ctrl-C reaches
 * the whole process group, and the primary stops each worker once.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Prefork } from "effect-prefork/node"
 *
 * Prefork.runMain(
 *   Prefork.run({ processes: 4 }, (id) => Effect.log(`worker ${id} serving`).pipe(Effect.andThen(Effect.never)))
 * )
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const run = <A, E, R>(
  options: Options,
  worker: (id: TaskId) => Effect.Effect<A, E, R>
): Effect.Effect<
  Supervisor.Summary,
  TooManyRestarts | SpawnFailed | InvalidOptions | BindFailed,
  Exclude<R, Current>
> => Effect.suspend(() => (isWorker() ? runWorker(worker) : supervise(options)))

/**
 * A teardown for `runMain` (this module's, or `NodeRuntime.runMain`) under which a program stopped by
 * SIGINT or SIGTERM (interrupted, nothing else) exits 0 rather than 130. It does not know which signal
 * stopped the program: {@link runMain} is the one under which a cluster worker dies of its signal.
 *
 * @since 0.1.0
 * @category running
 */
export const teardown: Runtime.Teardown = (exit, onExit) =>
  Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause) ? onExit(0) : Runtime.defaultTeardown(exit, onExit)

/**
 * Runs a program as the process's main, as `NodeRuntime.runMain` does with
 * {@link teardown}: SIGINT or SIGTERM interrupt it — the supervisor stops
 * every worker — and the process exits 0; a failure is reported and exits 1.
 * SIGHUP reloads every supervisor `forkProcesses` and `run` started (a surge
 * reload, as the `prefork` command's SIGHUP). In a worker only SIGTERM does
 * (SIGINT is left to the primary, SIGHUP ignored), and
 * a worker interrupted by it dies of SIGTERM once its finalizers ran, so that
 * its primary restarts it when someone else sent the signal (Tornado's
 * "killed by signal 15, restarting") and counts it as stopped when the primary
 * did. (Written on `Runtime.makeRunMain` so that the primary does not load
 * `@effect/platform-node`, which would cost it tens of megabytes.)
 *
 * @since 0.1.0
 * @category running
 */
export const runMain: <A, E>(effect: Effect.Effect<A, E>) => void = (() => {
  const run = Runtime.makeRunMain(({ fiber, teardown }) => {
    let signaled: NodeJS.Signals | undefined
    const onSignal = (signal: NodeJS.Signals) => {
      signaled ??= signal
      fiber.interruptUnsafe(fiber.id)
    }
    // In a cluster worker, Ctrl-C (SIGINT to the whole group) is the primary's to act on: it stops each worker once.
    const onInterrupt = isWorker() ? ignoreSignal : onSignal
    // SIGHUP reloads the supervisors of this process, as the prefork command does; a worker leaves it alone.
    const onHangup = () => {
      if (!isWorker()) Effect.runFork(reloadAll)
    }
    process.on("SIGINT", onInterrupt)
    process.on("SIGTERM", onSignal)
    process.on("SIGHUP", onHangup)
    fiber.addObserver((exit) => {
      process.off("SIGINT", onInterrupt)
      process.off("SIGTERM", onSignal)
      process.off("SIGHUP", onHangup)
      // A cluster worker stopped by a signal dies of it, for its primary to see (the primary exits 0).
      if (isWorker() && signaled !== undefined && interruptedOnly(exit)) return dieOf(signaled)
      teardown(exit, (code) => {
        if (signaled !== undefined || code !== 0) process.exit(code)
      })
    })
  })
  return (effect) => run(effect, { teardown })
})()
