/**
 * Supervise `processes` workers of one command or Node module: Tornado's
 * `fork_processes` loop, as Effect.
 *
 * Each task slot `0 … n-1` is one fiber that spawns its worker, waits for it
 * to exit, classifies the exit, steps the shared restart budget and, if the
 * policy says so, starts the slot again with the same task id. The worker
 * process lives in a scope inside that fiber, so the fiber tree is the process
 * tree: interrupting the supervisor stops every worker (SIGTERM, one stop
 * deadline for all of them together, then SIGKILL) and nothing is spawned after
 * the interruption begins. Exits seen while stopping are not restarts and spend
 * no budget.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Supervisor } from "effect-prefork"
 * import { NodeProcessSpawner } from "effect-prefork/node"
 *
 * const program = Supervisor.run({ processes: 4, command: "node", args: ["worker.js"], maxRestarts: 10 }).pipe(
 *   Effect.catchTag("TooManyRestarts", (e) => Effect.logError(e.message)),
 *   Effect.provide(NodeProcessSpawner.layer)
 * )
 * ```
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as PubSub from "effect/PubSub"
import * as Stream from "effect/Stream"
import type * as Scope from "effect/Scope"
import { type BindFailed, InvalidOptions, type ReloadFailed, type SpawnFailed, type TooManyRestarts } from "./Errors.ts"
import { cpuCount } from "./internal/cpus.ts"
import * as Live from "./internal/live.ts"
import { resolve as resolveIdentity } from "./internal/users.ts"
import * as Loop from "./internal/loop.ts"

/**
 * How a rolling reload goes (see `SupervisorHandle.reload`).
 *
 * @since 0.1.0
 * @category models
 */
export type ReloadOptions = Loop.ReloadOptions

/**
 * A process the supervisor still has (see `SupervisorHandle.live`): its pid,
 * and its task id, or none for a spare not given one.
 *
 * @since 0.1.0
 * @category models
 */
export type LiveProcess = Live.LiveProcess
import * as Listen from "./Listen.ts"
import type { Config, Event, SlotStatus, Summary } from "./Model.ts"
import { type Mode, type OutputSink, ProcessSpawner, type Readiness } from "./ProcessSpawner.ts"
import * as RestartPolicy from "./RestartPolicy.ts"
import type { TaskId } from "./TaskId.ts"

export type {
  /** @since 0.1.0 */
  Config,
  /** @since 0.1.0 */
  Event,
  /** @since 0.1.0 */
  SlotStatus,
  /** @since 0.1.0 */
  Summary
} from "./Model.ts"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options extends RestartPolicy.RestartOptions {
  /**
   * How many workers. Undefined or <= 0: one per CPU, as Tornado's
   * `cpu_count()`: the CPUs this process may run on (its affinity mask,
   * `os.availableParallelism()`), capped by its cgroup's CPU quota (a
   * container's CPU limit), rounded up. The log says how the number was chosen.
   */
  readonly processes?: number | undefined
  /** `"command"` (default): any executable; `"module"`: a Node module run with `node` and an IPC channel. */
  readonly mode?: Mode | undefined
  /** The executable, or the module path in `"module"` mode. Never run through a shell. */
  readonly command: string
  readonly args?: ReadonlyArray<string> | undefined
  /** Node options for `"module"` workers. Default: the primary's `process.execArgv`, as `fork` does. */
  readonly execArgv?: ReadonlyArray<string> | undefined
  /** Variables added to the primary's environment for every worker. */
  readonly env?: Readonly<Record<string, string>> | undefined
  readonly cwd?: string | undefined
  /**
   * Default `"inherit"`: workers write to the primary's stdout and stderr.
   * `"pipe"` sends each line to `onOutput` instead.
   */
  readonly stdio?: "inherit" | "ignore" | "pipe" | undefined
  /**
   * With `stdio: "pipe"`: receives every line of every worker, in order per
   * stream. Return an `Effect` to slow a worker down until it completes
   * (backpressure).
   */
  readonly onOutput?: OutputSink | undefined
  /** How long workers may take to exit after SIGTERM, all together, before SIGKILL. Default 5 seconds. */
  readonly stopTimeout?: Duration.Input | undefined
  /**
   * When a worker counts as ready: at once (`"spawn"`, the default except in
   * cluster mode), when it sends `Worker.ready` (`"message"`, module and
   * cluster modes), when it listens or sends `Worker.ready` (`"listening"`:
   * cluster mode, its default; module mode with the drain, the default with
   * sockets), or after a delay (`{ delay }`).
   */
  readonly ready?: Readiness | { readonly delay: Duration.Input } | undefined
  /**
   * A worker not ready this long after its start is stopped and counts as a
   * failure (`NotReady`). Default 30 seconds; ignored when `ready` is `"spawn"`.
   */
  readonly readyTimeout?: Duration.Input | undefined
  /**
   * Addresses the supervisor binds before any worker starts and holds until
   * the supervision ends, so the port never refuses a connection while
   * workers restart. Every worker gets them as descriptors 3, 4, … with
   * `LISTEN_FDS`, `LISTEN_FDNAMES` and `LISTEN_PID` (systemd's socket
   * activation): `server.listen({ fd: 3 })` in Node, `gunicorn app:app` (it
   * reads `LISTEN_FDS` itself; `--bind fd://3` as well would take fd 3 twice
   * and fail with EBADF), `uvicorn --fd 3`. See `Listen` for the address forms (`"8080"`,
   * `"127.0.0.1:0"`, `"[::1]:8080"`, `"unix:/run/app.sock"`, `"fd:3"`, or
   * objects with `backlog`, `mode`, `name`).
   */
  readonly listen?: ReadonlyArray<Listen.Input> | undefined
  /**
   * Whether a supervisor started by socket activation (`LISTEN_FDS` and
   * `LISTEN_PID` naming this process) serves the sockets it was given.
   * Default `true`. They are taken once (the variables are then deleted from
   * `process.env`, as `sd_listen_fds(1)` does), and only when neither
   * `listen` nor `sockets` is given: explicit addresses win, with a warning.
   */
  readonly inheritSockets?: boolean | undefined
  /**
   * Sockets already listening that the caller owns (such as those of
   * `Prefork.bindSockets`): handed to every worker before those of `listen`,
   * never closed by the supervisor.
   */
  readonly sockets?: ReadonlyArray<Listen.Socket> | undefined
  /**
   * Run every worker as this user (a name or a uid), with that user's
   * primary group unless `group` says otherwise: a supervisor started as root
   * binds port 80 (`listen`) and runs its workers unprivileged. Needs root; a
   * supervisor that is not root fails with `InvalidOptions` (field `user`).
   */
  readonly user?: string | number | undefined
  /** Run every worker with this group (a name or a gid). Needs root to change. */
  readonly group?: string | number | undefined
  /**
   * Hung-worker detection (gunicorn's `timeout`): a worker that sends no
   * heartbeat for `timeout` once ready is killed and restarted as a failure
   * (`Unresponsive`). A duration is the timeout. Module and cluster workers
   * beat from their own event loop every `interval` (default a quarter of the
   * timeout) with no code of their own, so a blocked loop is caught; a command
   * beats by writing a byte to `PREFORK_HEARTBEAT_FD`. The supervisor wakes
   * once per deadline, not per beat: a beat costs it one IPC message.
   */
  readonly heartbeat?:
    | Duration.Input
    | { readonly timeout: Duration.Input; readonly interval?: Duration.Input | undefined }
    | undefined
  /**
   * Recycle a worker whose resident memory (its whole process group) stays
   * above this many bytes, or `"512M"`, `"1.5G"`, `"800K"`: two samples in a
   * row above it. Recycling is a graceful, readiness-gated replacement that
   * spends no budget (`Recycled`).
   */
  readonly maxMemory?: number | string | undefined
  /** How often memory is sampled with `maxMemory`. Default 5 seconds. */
  readonly memoryInterval?: Duration.Input | undefined
  /**
   * Recycle each worker after this long (counted from when it is ready), plus
   * a random jitter in `[0, lifetimeJitter]` drawn per worker so they do not
   * recycle together (gunicorn's `max_requests_jitter`).
   */
  readonly maxLifetime?: Duration.Input | undefined
  /** The most jitter added to `maxLifetime`. Default a tenth of `maxLifetime`. */
  readonly lifetimeJitter?: Duration.Input | undefined
  /**
   * Keep this many warm spares (module and cluster modes): workers booted,
   * their code loaded, waiting for a task id. When a worker dies a spare
   * takes its task id at once and another spare boots in the background.
   * Spares never count as workers, never get a task id or traffic before
   * they are activated, die with the supervisor and are refreshed on reload.
   */
  readonly spares?: number | undefined
  /**
   * Node workers (module and cluster modes, and a command that is `node …`)
   * drain their HTTP servers on SIGTERM with no code of their own: they stop
   * accepting, finish the requests in flight, answer the next request on each
   * keep-alive connection with `Connection: close`, close quiet connections,
   * and exit once nothing is open. A worker handed `listen` sockets that calls
   * `listen(port)` on one's address serves that socket, and a module worker
   * with sockets is ready when it listens (`ready` defaults to
   * `"listening"`). Default `true`; `false` runs workers exactly as given.
   * See docs/lifecycle.md.
   */
  readonly drain?: boolean | undefined
}

/**
 * A running supervisor, valid while the scope that started it is open.
 *
 * @since 0.1.0
 * @category models
 */
export interface SupervisorHandle {
  /** How many task slots there are now (it changes with `scale`). */
  readonly processes: number
  /** The sockets the supervisor listens on (see `Options.listen`), with the real port of each. */
  readonly sockets: ReadonlyArray<Listen.Socket>
  /**
   * The supervisor's events. A new subscriber first gets the most recent ones
   * (up to 1,024, so nothing is missed by subscribing just after `start`),
   * then each new one; the stream ends with `Finished`.
   */
  readonly events: Stream.Stream<Event>
  readonly status: Effect.Effect<ReadonlyArray<SlotStatus>>
  /** Waits for the supervision to end: every slot exited normally, or the budget is spent. */
  readonly await: Effect.Effect<Summary, TooManyRestarts | SpawnFailed>
  /**
   * Waits until every slot is ready at the same moment (or the supervision
   * has ended: then it fails or succeeds as `await` does).
   */
  readonly awaitReady: Effect.Effect<void, TooManyRestarts | SpawnFailed>
  /** Stops every worker (gracefully, within the stop timeout) and waits until all are reaped. */
  readonly stop: Effect.Effect<void>
  /**
   * Replaces one slot's worker: stops it (SIGTERM, the stop timeout, then
   * SIGKILL) and starts it again at once with the same task id. This is not a
   * failure: it spends no budget and resets the slot's backoff. Completes when
   * the new worker is ready, or at once for a slot that has ended or does not
   * exist; the supervision ending also completes it. A restart of a worker
   * being replaced already (a surge, a recycle, a kill as unresponsive) joins
   * that replacement.
   */
  readonly restart: (taskId: TaskId) => Effect.Effect<void>
  /**
   * A rolling reload that loses nothing. By default a surge: for each slot in
   * turn (`concurrency` at a time, default 1), a replacement is started beside
   * the live worker (the task id is shared for that moment), and once it is
   * ready the old worker is stopped gracefully; so no slot is ever down. If a
   * replacement exits or is not ready within the ready timeout, it is stopped,
   * the old worker keeps serving, the slots after it are not reloaded, and the
   * reload fails with `ReloadFailed` (no restart budget is spent).
   * `surge: false` replaces each worker as `restart` does (stop, then start).
   */
  readonly reload: (options?: ReloadOptions) => Effect.Effect<void, ReloadFailed | InvalidOptions>
  /**
   * Changes the number of slots. New slots take the next task ids and start at
   * once; removing slots stops the workers with the highest task ids (as the
   * supervisor stops everything: SIGTERM, the stop timeout, then SIGKILL), so
   * the live ids stay `0 … n-1`. Completes once added workers are started or
   * removed ones are reaped. `processes` must be an integer >= 1.
   */
  readonly scale: (processes: number) => Effect.Effect<void, InvalidOptions>
  /** The pids of the warm spares booted now (see `Options.spares`), oldest first: the next one taken first. */
  readonly spares: Effect.Effect<ReadonlyArray<number>>
  /**
   * Every process the supervisor has started and not yet reaped, in the order
   * they started: slot workers, surge replacements, workers being stopped,
   * spares booting, waiting or being stopped. A process stays listed until
   * its leader is reaped and its process group is empty.
   */
  readonly live: Effect.Effect<ReadonlyArray<LiveProcess>>
  /**
   * Sends SIGKILL at once to every process of `live` whose leader is not
   * reaped yet (to its whole process group), and says which: what a second
   * Ctrl-C does to a supervisor stopping gracefully. Whatever stop is under
   * way then reaps them.
   */
  readonly kill: Effect.Effect<ReadonlyArray<LiveProcess>>
}

const EVENT_REPLAY = 1024

/**
 * The most workers a supervisor runs: `processes` and `scale` above it are
 * `InvalidOptions`. It bounds what one request (`prefork ctl scale`, a
 * config value) can make the supervisor allocate.
 *
 * @since 0.1.0
 * @category constants
 */
export const MAX_PROCESSES: number = Loop.MAX_PROCESSES

const invalid = (field: string, message: string) => new InvalidOptions({ field, message })

/**
 * Validates options: every bad value is an `InvalidOptions` naming its field.
 *
 * @since 0.1.0
 * @category constructors
 */
export const config = Effect.fnUntraced(function* (options: Options): Effect.fn.Return<Config, InvalidOptions> {
  if (process.platform === "win32") {
    return yield* invalid("platform", "effect-prefork needs POSIX signals and process groups; Windows is not supported")
  }
  const requested = options.processes
  if (
    requested !== undefined &&
    (typeof requested !== "number" || !Number.isInteger(requested) || requested > MAX_PROCESSES)
  ) {
    return yield* invalid(
      "processes",
      `processes must be an integer up to ${MAX_PROCESSES} (<= 0 means one per CPU), got ${String(requested)}`
    )
  }
  const perCpu = requested === undefined || requested <= 0 ? cpuCount() : undefined
  const processes = perCpu?.count ?? requested!
  const mode = options.mode ?? "command"
  if (mode !== "command" && mode !== "module" && mode !== "cluster") {
    return yield* invalid("mode", `mode must be "command", "module" or "cluster", got ${JSON.stringify(mode)}`)
  }
  if (typeof options.command !== "string" || options.command.length === 0) {
    return yield* invalid("command", "command must be a non-empty string")
  }
  const args = options.args ?? []
  if (!Array.isArray(args) || !args.every((a) => typeof a === "string")) {
    return yield* invalid("args", "args must be a list of strings")
  }
  const env = options.env ?? {}
  for (const [k, v] of Object.entries(env)) {
    if (typeof v !== "string" || k.length === 0 || k.includes("=")) {
      return yield* invalid("env", `env must map variable names to strings; ${JSON.stringify(k)} does not`)
    }
  }
  const stdio = options.stdio ?? "inherit"
  if (stdio !== "inherit" && stdio !== "ignore" && stdio !== "pipe") {
    return yield* invalid("stdio", `stdio must be "inherit", "ignore" or "pipe", got ${JSON.stringify(stdio)}`)
  }
  if (options.onOutput !== undefined && typeof options.onOutput !== "function") {
    return yield* invalid("onOutput", "onOutput must be a function")
  }
  const stopTimeout = yield* RestartPolicy.decodeDuration("stopTimeout", options.stopTimeout, "5 seconds")
  if (options.drain !== undefined && typeof options.drain !== "boolean") {
    return yield* invalid("drain", `drain must be true or false, got ${JSON.stringify(options.drain)}`)
  }
  const drain = options.drain !== false
  const withSockets = (options.listen?.length ?? 0) > 0 || (options.sockets?.length ?? 0) > 0
  // A Node worker with sockets is ready when it listens (the drain's preload says so); cluster workers always.
  const readyOption =
    options.ready ?? (mode === "cluster" || (mode === "module" && drain && withSockets) ? "listening" : "spawn")
  let ready: Config["ready"]
  if (typeof readyOption === "object" && readyOption !== null) {
    ready = { delay: yield* RestartPolicy.decodeDuration("ready.delay", readyOption.delay, 0) }
  } else if (readyOption === "spawn" || readyOption === "message" || readyOption === "listening") {
    if (readyOption === "message" && mode === "command") {
      return yield* invalid("ready", `ready: "message" needs an IPC channel: use mode "module" or "cluster"`)
    }
    if (readyOption === "listening" && mode !== "cluster" && (mode !== "module" || !drain)) {
      return yield* invalid(
        "ready",
        mode === "module"
          ? `ready: "listening" in mode "module" needs the drain's preload (drain: false turns it off)`
          : `ready: "listening" needs an IPC channel: use mode "module" or "cluster"`
      )
    }
    ready = readyOption
  } else {
    return yield* invalid(
      "ready",
      `ready must be "spawn", "message", "listening" or { delay }, got ${JSON.stringify(readyOption)}`
    )
  }
  const readyTimeout = yield* RestartPolicy.decodeDuration("readyTimeout", options.readyTimeout, "30 seconds")
  const policy = yield* RestartPolicy.make(options)
  const identity = resolveIdentity(options.user, options.group)
  if ("field" in identity) return yield* invalid(identity.field, identity.message)
  const given = yield* Listen.parseAll(options.listen)
  const owner = identity.uid === undefined && identity.gid === undefined ? undefined : identity
  // Started by socket activation: the sockets handed to this process are served, unless listen or sockets are given.
  const explicit = given.length > 0 || (options.sockets?.length ?? 0) > 0
  const activated = options.inheritSockets === false || mode === "cluster" ? [] : yield* Listen.activation({ explicit })
  if (mode === "cluster" && (given.length > 0 || (options.sockets?.length ?? 0) > 0)) {
    return yield* invalid(
      "listen",
      `listen needs workers started with fork or spawn: use mode "module" or "command" (a node:cluster worker cannot serve an inherited socket)`
    )
  }
  const health = yield* healthConfig(options, mode)
  return {
    ...health,
    processes,
    mode,
    command: options.command,
    args,
    execArgv: options.execArgv,
    env,
    cwd: options.cwd,
    stdio,
    onOutput: options.onOutput,
    stopTimeout,
    ready,
    readyTimeout,
    drain,
    policy,
    processesReason: perCpu?.reason,
    uid: identity.uid,
    gid: identity.gid,
    listen:
      mode === "cluster"
        ? []
        : activated.length > 0
          ? activated
          : given.map((spec) =>
              spec._tag === "Unix" && owner !== undefined
                ? { ...spec, owner: { uid: owner.uid, gid: owner.gid } }
                : spec
            ),
    sockets: mode === "cluster" ? [] : (options.sockets ?? [])
  }
})

const SIZE = /^(\d+(?:\.\d+)?)\s*(?:([kmgt])(?:i?b)?|b)?$/i
const UNITS: Record<string, number> = { k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 }

/**
 * A size in bytes: a number, or a string such as `"512M"`, `"1.5G"`,
 * `"800KiB"` (powers of 1024, as PM2's `max_memory_restart`).
 *
 * @since 0.1.0
 * @category utils
 */
export const parseBytes = (input: number | string): Option.Option<number> => {
  if (typeof input === "number")
    return Number.isFinite(input) && input > 0 ? Option.some(Math.floor(input)) : Option.none()
  const match = SIZE.exec(input.trim())
  if (match === null) return Option.none()
  const bytes = Math.floor(Number(match[1]) * (match[2] === undefined ? 1 : UNITS[match[2].toLowerCase()]!))
  return bytes > 0 ? Option.some(bytes) : Option.none()
}

const healthConfig = Effect.fnUntraced(function* (options: Options, mode: Mode) {
  let heartbeat: Config["heartbeat"]
  if (options.heartbeat !== undefined) {
    const given = options.heartbeat
    const isObject = typeof given === "object" && given !== null && "timeout" in given
    const timeout = yield* RestartPolicy.decodeDuration(
      "heartbeat.timeout",
      isObject ? given.timeout : (given as Duration.Input),
      0
    )
    const defaultInterval = Duration.divideUnsafe(timeout, 4)
    const interval = yield* RestartPolicy.decodeDuration(
      "heartbeat.interval",
      isObject ? given.interval : undefined,
      defaultInterval
    )
    if (Duration.toMillis(interval) < 1 || Duration.isLessThanOrEqualTo(timeout, interval)) {
      return yield* invalid(
        "heartbeat",
        `heartbeat timeout must be longer than its interval (>= 1 ms), got timeout ${Duration.format(timeout)} and interval ${Duration.format(interval)}`
      )
    }
    heartbeat = { timeout, interval }
  }
  let maxMemory: number | undefined
  if (options.maxMemory !== undefined) {
    const parsed =
      typeof options.maxMemory === "number" || typeof options.maxMemory === "string"
        ? parseBytes(options.maxMemory)
        : Option.none()
    if (Option.isNone(parsed)) {
      return yield* invalid(
        "maxMemory",
        `maxMemory must be a positive number of bytes or a size such as "512M" or "1.5G", got ${JSON.stringify(options.maxMemory)}`
      )
    }
    maxMemory = parsed.value
  }
  const memoryInterval = yield* RestartPolicy.decodeDuration("memoryInterval", options.memoryInterval, "5 seconds")
  if (Duration.toMillis(memoryInterval) < 1) {
    return yield* invalid("memoryInterval", "memoryInterval must be at least 1 ms")
  }
  let maxLifetime: Duration.Duration | undefined
  if (options.maxLifetime !== undefined) {
    maxLifetime = yield* RestartPolicy.decodeDuration("maxLifetime", options.maxLifetime, 0)
    if (Duration.toMillis(maxLifetime) < 1) return yield* invalid("maxLifetime", "maxLifetime must be at least 1 ms")
  }
  const lifetimeJitter = yield* RestartPolicy.decodeDuration(
    "lifetimeJitter",
    options.lifetimeJitter,
    maxLifetime === undefined ? 0 : Duration.divideUnsafe(maxLifetime, 10)
  )
  const spares = options.spares ?? 0
  if (typeof spares !== "number" || !Number.isInteger(spares) || spares < 0) {
    return yield* invalid("spares", `spares must be a whole number >= 0, got ${String(spares)}`)
  }
  if (spares > 0 && mode === "command") {
    return yield* invalid(
      "spares",
      `spares need workers that wait for their task id over IPC: use mode "module" or "cluster"`
    )
  }
  return { heartbeat, maxMemory, memoryInterval, maxLifetime, lifetimeJitter, spares }
})

/**
 * Starts supervising in the current scope and returns a handle. Closing the
 * scope stops every worker and waits until all are reaped.
 *
 * @since 0.1.0
 * @category constructors
 */
export const start = Effect.fnUntraced(function* (
  options: Options
): Effect.fn.Return<SupervisorHandle, InvalidOptions | BindFailed, Scope.Scope | ProcessSpawner> {
  const cfg = yield* config(options)
  const events = yield* PubSub.unbounded<Event>({ replay: EVENT_REPLAY })
  yield* Effect.addFinalizer(() =>
    Effect.clockWith((clock) => PubSub.end(events, { _tag: "Finished", at: clock.currentTimeMillisUnsafe() }))
  )
  const live = Live.track(yield* ProcessSpawner)
  const loop = yield* Loop.start(cfg, (event) => PubSub.publish(events, event)).pipe(
    Effect.provideService(ProcessSpawner, live.spawner)
  )
  // "Finished" is the last event: published once the run has ended and every process is gone.
  yield* Fiber.await(loop.fiber).pipe(
    Effect.andThen(
      Effect.clockWith((clock) => PubSub.end(events, { _tag: "Finished", at: clock.currentTimeMillisUnsafe() }))
    ),
    Effect.forkScoped
  )
  return {
    get processes() {
      return loop.processes()
    },
    sockets: loop.sockets,
    events: Stream.fromPubSub(events).pipe(Stream.takeUntil((e) => e._tag === "Finished")),
    status: loop.status,
    await: Fiber.join(loop.fiber),
    awaitReady: loop.awaitReady,
    stop: Effect.asVoid(Fiber.interrupt(loop.fiber)),
    restart: loop.restart,
    reload: loop.reload,
    scale: loop.scale,
    spares: loop.spares,
    live: live.list,
    kill: live.signal("SIGKILL")
  }
})

/**
 * Supervises until every worker has exited normally (success, with a summary)
 * or the restart budget is spent (`TooManyRestarts`, after every worker has
 * been stopped). Interrupting it stops every worker.
 *
 * @since 0.1.0
 * @category constructors
 */
export const run = (
  options: Options
): Effect.Effect<Summary, TooManyRestarts | SpawnFailed | InvalidOptions | BindFailed, ProcessSpawner> =>
  Effect.scoped(Effect.flatMap(start(options), (handle) => handle.await))
