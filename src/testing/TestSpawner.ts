/**
 * An in-memory {@link ProcessSpawner}: its "processes" are records that a test
 * inspects, signals and ends at will, so supervision can be tested
 * deterministically under `TestClock`, without starting a single OS process.
 *
 * Provide {@link layer}; the supervisor uses the `ProcessSpawner` it provides
 * and the test drives the processes through the {@link TestSpawner} service:
 *
 * ```ts
 * import { Effect, Fiber } from "effect"
 * import { ExitStatus, Supervisor } from "effect-prefork"
 * import { TestSpawner } from "effect-prefork/testing"
 *
 * const program = Effect.gen(function*() {
 *   const spawner = yield* TestSpawner.TestSpawner
 *   const fiber = yield* Effect.forkChild(Supervisor.run({ processes: 2, command: "worker" }))
 *   const [first, second] = yield* spawner.awaitSpawns(2)
 *   yield* spawner.exit(first!.pid, ExitStatus.exited(0))
 *   yield* spawner.exit(second!.pid, ExitStatus.exited(0))
 *   return yield* Fiber.join(fiber)
 * }).pipe(Effect.provide(TestSpawner.layer()))
 * ```
 *
 * Pids are deterministic: `1000`, `1001`, … in spawn order (see
 * {@link Options.firstPid}). Every time recorded is read from `Clock`.
 *
 * Readiness: a process spawned with `readiness: "spawn"` is ready at once; one
 * that waits for a message (`"message"`, `"listening"`) is ready when the test
 * calls `ready(pid)`, or by itself after {@link Options.readyAfter}. A process
 * that exits first is never ready. With `stdio: "pipe"`, `output(pid, line)`
 * hands a line to the request's `onOutput`, as a real worker's output would.
 *
 * Signals: `SIGKILL` always ends a process as `Signaled{SIGKILL}`. `SIGTERM`
 * and `SIGINT` end it as `Signaled{signal}` unless configured otherwise (see
 * {@link SignalBehavior}); any other signal is recorded and otherwise ignored
 * unless configured. A signal sent to a process that has already exited does
 * nothing and is not recorded on the process (a reaped pid is never signaled),
 * but every attempt is listed in {@link TestSpawner}'s `kills`.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import { BindFailed, SpawnFailed } from "../Errors.ts"
import * as ExitStatus from "../ExitStatus.ts"
import * as Listen from "../Listen.ts"
import {
  type OutputLine,
  type ProcessHandle,
  ProcessSpawner,
  type Signal,
  type SpawnRequest,
  makeStop,
  monotonicMillis
} from "../ProcessSpawner.ts"
import type { TaskId } from "../TaskId.ts"

/**
 * How a live test process reacts to a signal other than `SIGKILL`:
 * - `"terminate"`: it ends at once as `Signaled{signal}` (the default for
 *   `SIGTERM` and `SIGINT`);
 * - `"ignore"`: the signal is recorded and the process keeps running (the
 *   default for every other signal);
 * - `{ exit, after }`: it exits with `exit` after `after` (default zero),
 *   measured on `Clock`, as a worker that cleans up before exiting. Further
 *   signals while that exit is pending are recorded; only `SIGKILL` or an
 *   explicit {@link TestSpawner} `exit` can end it sooner.
 *
 * @since 0.1.0
 * @category models
 */
export type SignalBehavior =
  | "terminate"
  | "ignore"
  | { readonly exit: ExitStatus.ExitStatus; readonly after?: Duration.Input | undefined }

/**
 * A signal a live process received, and when (epoch milliseconds, from `Clock`).
 *
 * @since 0.1.0
 * @category models
 */
export interface SignalRecord {
  readonly signal: Signal
  readonly at: number
}

/**
 * One call of a handle's `kill`, whether or not the process was still alive
 * (`delivered` is `false` when it had already exited, and then nothing else
 * was recorded).
 *
 * @since 0.1.0
 * @category models
 */
export interface KillRecord {
  readonly pid: number
  readonly signal: Signal
  readonly at: number
  readonly delivered: boolean
}

/**
 * A snapshot of one test process.
 *
 * @since 0.1.0
 * @category models
 */
export interface TestProcess {
  readonly pid: number
  /** Its task id: for a spare, the one `activate` gave it (the request's until then). */
  readonly taskId: TaskId
  /** Started as a warm spare (`SpawnRequest.spare`). */
  readonly spare: boolean
  /** When a spare was given its task id, if it was. */
  readonly activatedAt: Option.Option<number>
  /** Heartbeats sent so far. */
  readonly heartbeats: number
  /** Whether its event loop is blocked (`hang`): it sends no heartbeats. */
  readonly hung: boolean
  /** What the supervisor asked to start. */
  readonly request: SpawnRequest
  /** 0 for the first process spawned, 1 for the next, … */
  readonly index: number
  readonly spawnedAt: number
  /** When the handle's `ready` completed, if it did. */
  readonly readyAt: Option.Option<number>
  /** Signals received while alive, in order. */
  readonly signals: ReadonlyArray<SignalRecord>
  readonly exitStatus: Option.Option<ExitStatus.ExitStatus>
  readonly exitedAt: Option.Option<number>
}

/**
 * A process's own exit, scripted at spawn: it exits with `status` after
 * `after` (default zero), measured on `Clock`.
 *
 * @since 0.1.0
 * @category models
 */
export interface ExitScript {
  readonly status: ExitStatus.ExitStatus
  readonly after?: Duration.Input | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** The pid of the first process; each next one gets the next integer. Default `1000`. */
  readonly firstPid?: number | undefined
  /** How every process reacts to these signals, unless configured per process. */
  readonly signals?: { readonly [S in Signal]?: SignalBehavior | undefined } | undefined
  /**
   * Called at each spawn: return an {@link ExitScript} to make the new process
   * exit by itself, or `undefined` to leave it running until the test ends it.
   */
  readonly script?: ((process: TestProcess) => ExitScript | undefined) | undefined
  /**
   * A process whose request waits for a ready message (`readiness` other than
   * `"spawn"`) sends it by itself this long after its spawn. Default: never;
   * the test calls `ready(pid)`.
   */
  readonly readyAfter?: Duration.Input | undefined
  /**
   * The resident memory a process reports (`ProcessHandle.memory`), in bytes,
   * until the test sets it with `setMemory`. Default 50 MiB.
   */
  readonly memory?: number | undefined
}

/**
 * The control side of the test spawner.
 *
 * @since 0.1.0
 * @category services
 */
export class TestSpawner extends Context.Service<
  TestSpawner,
  {
    /** Every process ever spawned, in spawn order. */
    readonly processes: Effect.Effect<ReadonlyArray<TestProcess>>
    /** Every socket the supervisor listened on, and whether it is still open. */
    readonly sockets: Effect.Effect<ReadonlyArray<Listen.Socket & { readonly open: boolean }>>
    /** Makes the next `listen` fail with `BindFailed` and this code (default `EADDRINUSE`). */
    readonly failNextListen: (code?: string) => Effect.Effect<void>
    /** The processes that have not exited, in spawn order. */
    readonly live: Effect.Effect<ReadonlyArray<TestProcess>>
    /** One process by pid; dies if no process ever had that pid. */
    readonly process: (pid: number) => Effect.Effect<TestProcess>
    /** Every call of a handle's `kill`, in order, including those on exited processes. */
    readonly kills: Effect.Effect<ReadonlyArray<KillRecord>>
    /** Every spawn that failed because of `failNextSpawns`. */
    readonly spawnFailures: Effect.Effect<ReadonlyArray<SpawnFailed>>
    /** Ends a live process with this status; does nothing if it has already exited. Dies on an unknown pid. */
    readonly exit: (pid: number, status: ExitStatus.ExitStatus) => Effect.Effect<void>
    /** Waits until at least `n` processes have been spawned, and returns the first `n`. */
    readonly awaitSpawns: (n: number) => Effect.Effect<ReadonlyArray<TestProcess>>
    /**
     * The process says it is ready (the `Worker.ready` message, or listening):
     * its handle's `ready` completes. Does nothing if it already was, or has
     * exited. Dies on an unknown pid.
     */
    readonly ready: (pid: number) => Effect.Effect<void>
    /**
     * The process writes a line: with `stdio: "pipe"` it reaches the request's
     * `onOutput`; otherwise it goes nowhere. Dies on an unknown pid.
     */
    readonly output: (pid: number, line: string, stream?: OutputLine["stream"]) => Effect.Effect<void>
    /** Waits until the process has exited. Dies on an unknown pid. */
    readonly awaitExit: (pid: number) => Effect.Effect<TestProcess>
    /**
     * Makes the next `count` spawns fail with `SpawnFailed` (default code
     * `ENOENT`). A shortage code (`EMFILE`, `ENFILE`, `EAGAIN`, `ENOMEM`: see
     * `Errors.isShortage`) makes a transient failure, which the supervisor
     * retries after a delay on `Clock` (100 ms, doubling up to 5 s); any other
     * code is a spawn that can never work.
     */
    readonly failNextSpawns: (
      count: number,
      options?: { readonly code?: string | undefined; readonly message?: string | undefined }
    ) => Effect.Effect<void>
    /** Sets how one process reacts to a signal (not `SIGKILL`). Dies on an unknown pid. */
    readonly onSignal: (pid: number, signal: Signal, behavior: SignalBehavior) => Effect.Effect<void>
    /** Sets how every process without its own setting reacts to a signal, from now on (live ones included). */
    readonly setSignalDefault: (signal: Signal, behavior: SignalBehavior) => Effect.Effect<void>
    /**
     * Blocks the process's event loop: it sends no more heartbeats (a
     * process spawned with `heartbeat` beats by itself at that interval on
     * `Clock` until then). Dies on an unknown pid.
     */
    readonly hang: (pid: number) => Effect.Effect<void>
    /** The process sends one heartbeat now (if alive). Dies on an unknown pid. */
    readonly beat: (pid: number) => Effect.Effect<void>
    /** Sets the resident memory the process reports, in bytes. Dies on an unknown pid. */
    readonly setMemory: (pid: number, bytes: number) => Effect.Effect<void>
  }
>()("effect-prefork/testing/TestSpawner") {}

interface ProcessState {
  readonly pid: number
  taskId: TaskId
  activatedAt: Option.Option<number>
  heartbeats: number
  hung: boolean
  memory: number
  lastBeat: Option.Option<number>
  readonly request: SpawnRequest
  readonly index: number
  readonly spawnedAt: number
  readyAt: Option.Option<number>
  readonly readyLatch: Deferred.Deferred<void>
  readonly signals: Array<SignalRecord>
  readonly reactions: Map<Signal, SignalBehavior>
  readonly exited: Deferred.Deferred<ExitStatus.ExitStatus>
  exit: Option.Option<{ readonly status: ExitStatus.ExitStatus; readonly at: number }>
  exitPending: boolean
}

const snapshot = (p: ProcessState): TestProcess => ({
  pid: p.pid,
  taskId: p.taskId,
  spare: p.request.spare === true,
  activatedAt: p.activatedAt,
  heartbeats: p.heartbeats,
  hung: p.hung,
  request: p.request,
  index: p.index,
  spawnedAt: p.spawnedAt,
  readyAt: p.readyAt,
  signals: p.signals.slice(),
  exitStatus: Option.map(p.exit, (e) => e.status),
  exitedAt: Option.map(p.exit, (e) => e.at)
})

const builtinReaction = (signal: Signal): SignalBehavior =>
  signal === "SIGTERM" || signal === "SIGINT" ? "terminate" : "ignore"

/**
 * Provides an in-memory `ProcessSpawner` and the {@link TestSpawner} service
 * that controls it. Each build of the layer starts from an empty process table.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<ProcessSpawner | TestSpawner> =>
  Layer.effectContext(
    Effect.gen(function* () {
      const scope = yield* Scope.Scope
      const firstPid = options.firstPid ?? 1000
      const table: Array<ProcessState> = []
      const byPid = new Map<number, ProcessState>()
      const kills: Array<KillRecord> = []
      const failures: Array<SpawnFailed> = []
      const failQueue: Array<{ readonly code: string; readonly message: string | undefined }> = []
      const bindFailures: Array<string> = []
      const defaults = new Map<Signal, SignalBehavior>()
      for (const [signal, behavior] of Object.entries(options.signals ?? {})) {
        if (behavior !== undefined) defaults.set(signal as Signal, behavior)
      }
      let spawnWaiters: Array<{
        readonly n: number
        readonly deferred: Deferred.Deferred<ReadonlyArray<TestProcess>>
      }> = []

      const lookup = (pid: number): Effect.Effect<ProcessState> =>
        Effect.suspend(() => {
          const p = byPid.get(pid)
          return p === undefined ? Effect.die(new Error(`TestSpawner: no process with pid ${pid}`)) : Effect.succeed(p)
        })

      /** Ends a live process now; a no-op if it already exited. */
      const endUnsafe = (p: ProcessState, status: ExitStatus.ExitStatus, at: number): void => {
        if (Option.isSome(p.exit)) return
        p.exit = Option.some({ status, at })
        Deferred.doneUnsafe(p.exited, Effect.succeed(status))
      }

      /** Marks a live process ready; a no-op if it already is or has exited. */
      const readyUnsafe = (p: ProcessState, at: number): void => {
        if (Option.isSome(p.exit) || Option.isSome(p.readyAt)) return
        p.readyAt = Option.some(at)
        Deferred.doneUnsafe(p.readyLatch, Effect.void)
      }

      const end = (p: ProcessState, status: ExitStatus.ExitStatus): Effect.Effect<void> =>
        Effect.clockWith((clock) => Effect.sync(() => endUnsafe(p, status, clock.currentTimeMillisUnsafe())))

      /** Ends the process after a delay on `Clock`, in a fiber of the layer's scope. */
      const endAfter = (p: ProcessState, status: ExitStatus.ExitStatus, after: Duration.Input | undefined) => {
        const delay = Duration.fromInputUnsafe(after ?? Duration.zero)
        return Effect.sleep(delay).pipe(Effect.andThen(end(p, status)), Effect.forkIn(scope), Effect.asVoid)
      }

      /** Makes the process ready after a delay on `Clock`, in a fiber of the layer's scope. */
      const readyAfter = (p: ProcessState, after: Duration.Input) =>
        Effect.sleep(after).pipe(
          Effect.andThen(
            Effect.clockWith((clock) => Effect.sync(() => readyUnsafe(p, clock.currentTimeMillisUnsafe())))
          ),
          Effect.forkIn(scope),
          Effect.asVoid
        )

      const kill =
        (p: ProcessState) =>
        (signal: Signal): Effect.Effect<void> =>
          Effect.clockWith((clock) =>
            Effect.suspend(() => {
              const at = clock.currentTimeMillisUnsafe()
              const alive = Option.isNone(p.exit)
              kills.push({ pid: p.pid, signal, at, delivered: alive })
              if (!alive) return Effect.void
              p.signals.push({ signal, at })
              if (signal === "SIGKILL") {
                endUnsafe(p, ExitStatus.signaled("SIGKILL"), at)
                return Effect.void
              }
              if (p.exitPending) return Effect.void
              const behavior = p.reactions.get(signal) ?? defaults.get(signal) ?? builtinReaction(signal)
              if (behavior === "terminate") {
                endUnsafe(p, ExitStatus.signaled(signal), at)
                return Effect.void
              }
              if (behavior === "ignore") return Effect.void
              const delay = Duration.fromInputUnsafe(behavior.after ?? Duration.zero)
              if (Duration.isZero(delay)) {
                endUnsafe(p, behavior.exit, at)
                return Effect.void
              }
              p.exitPending = true
              return endAfter(p, behavior.exit, delay)
            })
          )

      /** One heartbeat, at `at` on the test clock's monotonic reading (`monotonicMillis`). */
      const beatUnsafe = (p: ProcessState, at: number): void => {
        if (Option.isSome(p.exit)) return
        p.heartbeats++
        p.lastBeat = Option.some(at)
      }

      /** A process spawned with `heartbeat` beats at that interval until it hangs or exits. */
      const beatEvery = (p: ProcessState, interval: Duration.Duration) =>
        Effect.gen(function* () {
          while (Option.isNone(p.exit) && !p.hung) {
            yield* Effect.sleep(interval)
            if (!p.hung) beatUnsafe(p, yield* Effect.clockWith((clock) => Effect.succeed(monotonicMillis(clock))))
          }
        }).pipe(Effect.forkIn(scope), Effect.asVoid)

      const handleOf = (p: ProcessState): ProcessHandle => {
        const exit = Deferred.await(p.exited)
        const exitStatus = Effect.sync(() => Option.map(p.exit, (e) => e.status))
        return {
          get taskId() {
            return p.taskId
          },
          pid: p.pid,
          lastHeartbeat: Effect.sync(() => p.lastBeat),
          memory: Effect.sync(() => (Option.isSome(p.exit) ? Option.none() : Option.some(p.memory))),
          activate: (taskId) =>
            Effect.clockWith((clock) =>
              Effect.sync(() => {
                p.taskId = taskId
                p.activatedAt = Option.some(clock.currentTimeMillisUnsafe())
              })
            ),
          diagnose: () =>
            Effect.suspend(() => {
              const signal: Signal = p.request.mode === "command" ? "SIGABRT" : "SIGUSR1"
              return Effect.as(kill(p)(signal), { signal })
            }),
          exit,
          ready: Deferred.await(p.readyLatch),
          exitStatus,
          kill: kill(p),
          stop: makeStop({
            taskId: p.taskId,
            pid: p.pid,
            exit,
            exitStatus,
            signalGroup: kill(p),
            alive: Effect.sync(() => Option.isNone(p.exit)),
            timeout: p.request.stopTimeout
          })
        }
      }

      const acquire = (request: SpawnRequest): Effect.Effect<ProcessHandle, SpawnFailed> =>
        Effect.clockWith((clock) =>
          Effect.suspend(() => {
            const failure = failQueue.shift()
            if (failure !== undefined) {
              const error = new SpawnFailed({
                taskId: request.taskId,
                command: request.command,
                code: failure.code,
                message: failure.message ?? `spawn ${request.command} ${failure.code}`
              })
              failures.push(error)
              return Effect.fail(error)
            }
            const index = table.length
            const spawnedAt = clock.currentTimeMillisUnsafe()
            const p: ProcessState = {
              pid: firstPid + index,
              taskId: request.taskId,
              activatedAt: Option.none(),
              heartbeats: 0,
              hung: false,
              memory: options.memory ?? 50 * 2 ** 20,
              lastBeat: Option.none(),
              request,
              index,
              spawnedAt,
              readyAt: Option.none(),
              readyLatch: Deferred.makeUnsafe<void>(),
              signals: [],
              reactions: new Map(),
              exited: Deferred.makeUnsafe<ExitStatus.ExitStatus>(),
              exit: Option.none(),
              exitPending: false
            }
            if (request.readiness === "spawn") readyUnsafe(p, spawnedAt)
            table.push(p)
            byPid.set(p.pid, p)
            const ready = spawnWaiters.filter((w) => w.n <= table.length)
            if (ready.length > 0) {
              spawnWaiters = spawnWaiters.filter((w) => w.n > table.length)
              for (const w of ready) {
                Deferred.doneUnsafe(w.deferred, Effect.succeed(table.slice(0, w.n).map(snapshot)))
              }
            }
            const script = options.script?.(snapshot(p))
            const effects: Array<Effect.Effect<void>> = []
            if (script !== undefined) effects.push(endAfter(p, script.status, script.after))
            if (options.readyAfter !== undefined && Option.isNone(p.readyAt)) {
              effects.push(readyAfter(p, options.readyAfter))
            }
            if (request.heartbeat !== undefined) effects.push(beatEvery(p, request.heartbeat))
            return Effect.as(Effect.all(effects, { discard: true }), handleOf(p))
          })
        )

      // Listening sockets: descriptors from 100 on, port 0 becomes 40000 + n, recorded open until their scope closes.
      const sockets: Array<{ socket: Listen.Socket; open: boolean }> = []
      const listen = (specs: ReadonlyArray<Listen.Spec>) =>
        Effect.suspend(() => {
          const failure = bindFailures.shift()
          if (failure !== undefined && specs.length > 0) {
            return Effect.fail(
              new BindFailed({
                address: Listen.formatSpec(specs[0]!),
                code: failure,
                message: `cannot listen on ${Listen.formatSpec(specs[0]!)}: ${failure}`
              })
            )
          }
          const entries = specs.map((spec) => {
            const fd = 100 + sockets.length
            const address: Listen.Address =
              spec._tag === "Unix"
                ? { _tag: "Unix", path: spec.path }
                : spec._tag === "Inherited"
                  ? { _tag: "Unix", path: `fd:${spec.fd}` }
                  : {
                      _tag: "Tcp",
                      host: spec.host ?? "::",
                      port: spec.port === 0 ? 40000 + sockets.length : spec.port,
                      family: spec.host !== undefined && !spec.host.includes(":") ? "IPv4" : "IPv6"
                    }
            const entry = { socket: { fd, name: spec.name ?? Listen.defaultName(address), address }, open: true }
            sockets.push(entry)
            return entry
          })
          return Effect.acquireRelease(Effect.succeed(entries), (entries) =>
            Effect.sync(() => {
              for (const entry of entries) entry.open = false
            })
          ).pipe(Effect.map((entries) => entries.map((e) => e.socket)))
        })

      const spawner = ProcessSpawner.of({
        listen,
        spawn: (request) => Effect.acquireRelease(acquire(request), (handle) => handle.stop)
      })

      const control = TestSpawner.of({
        processes: Effect.sync(() => table.map(snapshot)),
        sockets: Effect.sync(() => sockets.map((e) => ({ ...e.socket, open: e.open }))),
        failNextListen: (code = "EADDRINUSE") =>
          Effect.sync(() => {
            bindFailures.push(code)
          }),
        live: Effect.sync(() => table.filter((p) => Option.isNone(p.exit)).map(snapshot)),
        process: (pid) => Effect.map(lookup(pid), snapshot),
        kills: Effect.sync(() => kills.slice()),
        spawnFailures: Effect.sync(() => failures.slice()),
        exit: (pid, status) => Effect.flatMap(lookup(pid), (p) => end(p, status)),
        awaitSpawns: (n) =>
          Effect.suspend(() => {
            if (table.length >= n) return Effect.succeed(table.slice(0, Math.max(0, n)).map(snapshot))
            const deferred = Deferred.makeUnsafe<ReadonlyArray<TestProcess>>()
            const waiter = { n, deferred }
            spawnWaiters.push(waiter)
            return Deferred.await(deferred).pipe(
              Effect.onInterrupt(() =>
                Effect.sync(() => {
                  spawnWaiters = spawnWaiters.filter((w) => w !== waiter)
                })
              )
            )
          }),
        ready: (pid) =>
          Effect.flatMap(lookup(pid), (p) =>
            Effect.clockWith((clock) => Effect.sync(() => readyUnsafe(p, clock.currentTimeMillisUnsafe())))
          ),
        output: (pid, line, stream = "stdout") =>
          Effect.flatMap(lookup(pid), (p) =>
            Effect.suspend(() => {
              if (p.request.stdio !== "pipe" || p.request.onOutput === undefined) return Effect.void
              const result = p.request.onOutput({ taskId: p.taskId, pid: p.pid, stream, line })
              return Effect.isEffect(result) ? result : Effect.void
            })
          ),
        awaitExit: (pid) =>
          Effect.flatMap(lookup(pid), (p) => Effect.as(Deferred.await(p.exited), p).pipe(Effect.map(snapshot))),
        failNextSpawns: (count, failOptions) =>
          Effect.sync(() => {
            for (let i = 0; i < count; i++) {
              failQueue.push({ code: failOptions?.code ?? "ENOENT", message: failOptions?.message })
            }
          }),
        onSignal: (pid, signal, behavior) =>
          Effect.flatMap(lookup(pid), (p) =>
            Effect.sync(() => {
              p.reactions.set(signal, behavior)
            })
          ),
        setSignalDefault: (signal, behavior) =>
          Effect.sync(() => {
            defaults.set(signal, behavior)
          }),
        hang: (pid) =>
          Effect.flatMap(lookup(pid), (p) =>
            Effect.sync(() => {
              p.hung = true
            })
          ),
        beat: (pid) =>
          Effect.flatMap(lookup(pid), (p) =>
            Effect.clockWith((clock) => Effect.sync(() => beatUnsafe(p, monotonicMillis(clock))))
          ),
        setMemory: (pid, bytes) =>
          Effect.flatMap(lookup(pid), (p) =>
            Effect.sync(() => {
              p.memory = bytes
            })
          )
      })

      return Context.make(ProcessSpawner, spawner).pipe(Context.add(TestSpawner, control))
    })
  )
