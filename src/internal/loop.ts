/**
 * The supervision loop, Tornado's paragraph as Effect: for each task slot,
 * start a worker, wait for it, classify its exit, spend the budget, then start
 * it again or stop.
 *
 * Built from Effect's own pieces:
 * - one fiber per slot in a `FiberMap` keyed by task id: `remove` is the
 *   scale-down, a failure of any slot (budget spent, spawn failed) ends the
 *   run, an empty map is every slot done;
 * - the slots' states in a `SubscriptionRef` (see `slot.ts`): `awaitReady`
 *   and `scale` wait for a state that satisfies them;
 * - a mailbox per slot (`mailbox.ts`): `restart`, a reload and a recycle post
 *   an intent with its own reply, and only the slot's fiber acts and answers;
 * - each worker in a scope of its own, stopped by its handle's `stop` (one
 *   uninterruptible run per process): when the slot fiber is interrupted the
 *   scope's release stops the worker and waits; when the worker's leader
 *   exited by itself, what is left of its process group is stopped in the
 *   background (a `FiberSet` of reapers), so the replacement does not wait,
 *   while the run does not end before every reaper is done;
 * - a worker's life (`life.ts`) races its exit, its slot's mailbox and its
 *   health watches (`health.ts`: the heartbeat deadline, memory, lifetime);
 *   a surge (`surge.ts`) starts a replacement beside it; recycles queue
 *   behind one semaphore, each asked as an intent of its own;
 * - warm spares in a pool of their own (`spares.ts`), taken by a slot that
 *   needs a worker, stopped with the run.
 *
 * So the fiber tree is the process tree: the run's result, whatever it is,
 * surfaces only once every process it started is gone.
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberMap from "effect/FiberMap"
import * as FiberSet from "effect/FiberSet"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as Semaphore from "effect/Semaphore"
import * as Stream from "effect/Stream"
import * as SubscriptionRef from "effect/SubscriptionRef"
import type * as Tracer from "effect/Tracer"
import {
  type BindFailed,
  ExitRecord,
  InvalidOptions,
  type ExitReason,
  NotReady,
  type Recycled,
  ReloadFailed,
  type SpawnFailed,
  TooManyRestarts
} from "../Errors.ts"
import * as ExitStatus from "../ExitStatus.ts"
import * as Listen from "../Listen.ts"
import * as Metrics from "../Metrics.ts"
import type { Config, Event, SlotStatus, Summary } from "../Model.ts"
import { monotonicMillis, type ProcessHandle, ProcessSpawner, type SpawnRequest } from "../ProcessSpawner.ts"
import * as RestartPolicy from "../RestartPolicy.ts"
import { ENV_VAR, TaskId } from "../TaskId.ts"
import * as Life from "./life.ts"
import * as Mailbox from "./mailbox.ts"
import * as Shortage from "./shortage.ts"
import * as Slot from "./slot.ts"
import * as Spares from "./spares.ts"
import * as Surge from "./surge.ts"

/** How many of the most recent exits a supervisor keeps for `Summary` and `TooManyRestarts`. */
export const EXIT_HISTORY = 1000

type Failure = TooManyRestarts | SpawnFailed

/** Reasons that make an exit a failure, whatever its status: not ready in time, unresponsive. */
const isFailureReason = (reason: ExitReason | undefined): boolean =>
  reason?._tag === "NotReady" || reason?._tag === "Unresponsive"

/** The attributes an incarnation's span ends with. */
const exitAttributes = (status: ExitStatus.ExitStatus, reason: ExitReason | undefined): Record<string, unknown> => ({
  ...(status._tag === "Exited" ? { "process.exit.code": status.code } : { "process.exit.signal": status.signal }),
  "prefork.exit.status": ExitStatus.describe(status),
  ...(reason === undefined
    ? {}
    : { "prefork.exit.reason": reason._tag === "Recycled" ? `recycled:${reason.reason}` : reason._tag })
})

/**
 * How a rolling reload goes: `surge` (the default) starts each replacement
 * beside the live worker and stops the old one once the new one is ready;
 * `concurrency` slots at a time (default 1).
 *
 * @internal
 */
export interface ReloadOptions {
  readonly concurrency?: number | undefined
  readonly surge?: boolean | undefined
}

/**
 * The most slots a supervisor runs (`processes`, and `scale`): a bound on
 * what one request can make the supervisor allocate. Re-exported as
 * `Supervisor.MAX_PROCESSES`. @internal
 */
export const MAX_PROCESSES = 100_000

/** What the loop gives `Supervisor.start` to build its handle from. @internal */
export interface Loop {
  readonly sockets: ReadonlyArray<Listen.Socket>
  /** The run: every slot done (a summary) or the first failure, once every process is gone. */
  readonly fiber: Fiber.Fiber<Summary, Failure>
  readonly status: Effect.Effect<ReadonlyArray<SlotStatus>>
  readonly processes: () => number
  readonly awaitReady: Effect.Effect<void, Failure>
  readonly restart: (taskId: number) => Effect.Effect<void>
  readonly reload: (options?: ReloadOptions) => Effect.Effect<void, ReloadFailed | InvalidOptions>
  readonly scale: (processes: number) => Effect.Effect<void, InvalidOptions>
  /** The warm spares booted now, oldest first. */
  readonly spares: Effect.Effect<ReadonlyArray<number>>
}

/**
 * Starts every slot in the current scope. Closing the scope stops them all
 * (and waits), as interrupting `fiber` does.
 *
 * @internal
 */
export const start = Effect.fnUntraced(function* (
  cfg: Config,
  publish: (event: Event) => Effect.Effect<unknown>
): Effect.fn.Return<Loop, BindFailed, Scope.Scope | ProcessSpawner> {
  const spawner = yield* ProcessSpawner
  const clock = yield* Clock.Clock
  // Bound before any worker starts; closed when the shutdown begins, as the workers are told to stop (or with the scope).
  const scope = yield* Scope.Scope
  const socketScope = yield* Scope.fork(scope)
  const bound = yield* spawner.listen(cfg.listen).pipe(
    Scope.provide(socketScope),
    Effect.onError((cause) => Scope.close(socketScope, Exit.failCause(cause)))
  )
  const sockets = [...cfg.sockets, ...bound]
  if (bound.length > 0) yield* Effect.logInfo(`Listening on ${bound.map((s) => Listen.format(s.address)).join(", ")}`)
  if (sockets.length > 0) {
    yield* publish({ _tag: "Listening", sockets, at: clock.currentTimeMillisUnsafe() })
  }
  const { policy } = cfg
  // Every restart reason at zero, so the first restart is an increase a scraper sees.
  yield* Metrics.register
  if (cfg.heartbeat !== undefined && cfg.mode === "command" && /(^|\/)node(js)?$/.test(cfg.command)) {
    yield* Effect.logWarning(
      `heartbeat: ${cfg.command} runs in "command" mode, where a worker beats only by writing to PREFORK_HEARTBEAT_FD; use mode "module" for a Node program to beat by itself`
    )
  }
  const step = yield* RestartPolicy.start(policy)
  const budgetLock = Semaphore.makeUnsafe(1)
  const resetAfter = Duration.toMillis(policy.resetAfter)
  /** Wall-clock milliseconds: the `at` of events and records, for people. */
  const now = () => clock.currentTimeMillisUnsafe()
  /** Monotonic milliseconds: every duration and deadline (a clock stepped back moves none of them). */
  const monotonic = () => monotonicMillis(clock)

  const table = yield* SubscriptionRef.make(Slot.makeTable(cfg.processes))
  const apply = (taskId: TaskId, t: Slot.Transition) =>
    SubscriptionRef.update(table, (tb) => Slot.update(tb, taskId, t))
  /** Waits until the table satisfies `predicate` (now or after a change); leaves nothing behind if interrupted. */
  const waitFor = (predicate: (table: Slot.Table) => boolean): Effect.Effect<Slot.Table> =>
    SubscriptionRef.changes(table).pipe(
      Stream.filter(predicate),
      Stream.runHead,
      Effect.map(Option.getOrElse(() => SubscriptionRef.getUnsafe(table)))
    )

  const exits: Array<ExitRecord> = []
  /** When each budget-spending restart was made (the most recent ones): the intensity window's count. */
  const counted: Array<number> = []
  /** The restarts left before `TooManyRestarts`, when the budget is built from counts. */
  const updateBudget = Effect.suspend(() => {
    const limits = policy.limits
    if (limits === undefined) return Effect.void
    let left = Infinity
    if (limits.maxRestarts !== undefined) left = limits.maxRestarts - restarts
    if (limits.intensity !== undefined) {
      const window = Duration.toMillis(limits.intensity.within)
      const at = monotonic()
      // Counted, not filtered: this runs on every change of the table, a few times per restart.
      let within = 0
      for (const t of counted) if (at - t < window) within++
      left = Math.min(left, limits.intensity.maxRestarts - within)
    }
    return Number.isFinite(left) ? Metrics.setBudgetRemaining(Math.max(0, left)) : Effect.void
  })
  /** Exits caused by `restart`: never restarts of a failure, never part of `TooManyRestarts`. */
  const requestedExits = new WeakSet<ExitRecord>()
  let restarts = 0

  /** Per live slot, its mailbox: how anyone asks its fiber to replace its worker (see `mailbox.ts`). */
  const mailboxes = new Map<number, Mailbox.Mailbox>()

  const slots = yield* FiberMap.make<number, void, Failure>()
  const reapers = yield* FiberSet.make<void>()
  /** Recycles waiting for their turn (one at a time), and the fibers that keep the spares. */
  const recyclers = yield* FiberSet.make<void>()
  const spareFibers = yield* FiberSet.make<void>()
  const recycleLock = Semaphore.makeUnsafe(1)

  const spawnRequest = (taskId: TaskId, spare = false): SpawnRequest => ({
    taskId,
    mode: cfg.mode,
    command: cfg.command,
    args: cfg.args,
    execArgv: cfg.execArgv,
    env: spare ? cfg.env : { ...cfg.env, [ENV_VAR]: String(taskId) },
    heartbeat: cfg.heartbeat?.interval,
    spare,
    drain: cfg.drain,
    cwd: cfg.cwd,
    stdio: cfg.stdio,
    onOutput: cfg.onOutput,
    readiness: typeof cfg.ready === "object" ? "spawn" : cfg.ready,
    stopTimeout: cfg.stopTimeout,
    sockets,
    uid: cfg.uid,
    gid: cfg.gid
  })

  /** Warm spares, started as workers are but without a task id (a shortage retried, as for a slot). */
  const pool = yield* Spares.make({
    target: cfg.spares,
    spawn: Shortage.retrying(spawner.spawn(spawnRequest(TaskId(0), true)), { whose: { spare: true }, publish, now }),
    fibers: spareFibers,
    publish,
    now
  })

  const readySignal = (handle: ProcessHandle): Effect.Effect<void> =>
    typeof cfg.ready === "object" ? Effect.sleep(cfg.ready.delay) : handle.ready

  /**
   * Spawns a worker for the slot into a scope of its own, and tells it: one
   * uninterruptible step. A warm spare, when there is one (and `spares` is
   * allowed), takes the slot instead: one message gives it the task id.
   */
  const spawnOnce = (taskId: TaskId, transition: (pid: number) => Slot.Transition, spares = true) =>
    Effect.uninterruptible(
      Effect.gen(function* () {
        const spare = spares ? yield* pool.take : undefined
        if (spare !== undefined) {
          const { handle } = spare
          yield* handle.activate(taskId)
          yield* apply(taskId, transition(handle.pid))
          yield* Effect.logDebug(`child ${taskId} is spare pid ${handle.pid}`).pipe(
            Effect.annotateLogs({ taskId, pid: handle.pid })
          )
          yield* publish({ _tag: "Started", taskId, pid: handle.pid, at: now(), spare: true })
          return { scope: spare.scope, handle } satisfies Surge.Acquired
        }
        const scope = yield* Scope.make()
        const asked = clock.currentTimeNanosUnsafe()
        const spawned = yield* Effect.exit(Scope.provide(spawner.spawn(spawnRequest(taskId)), scope))
        if (Exit.isSuccess(spawned)) yield* Metrics.recordSpawn(Number(clock.currentTimeNanosUnsafe() - asked) / 1e9)
        if (Exit.isFailure(spawned)) {
          yield* Scope.close(scope, spawned)
          return yield* Effect.failCause(spawned.cause)
        }
        const handle = spawned.value
        yield* apply(taskId, transition(handle.pid))
        yield* publish({ _tag: "Started", taskId, pid: handle.pid, at: now() })
        return { scope, handle } satisfies Surge.Acquired
      })
    )

  /**
   * As `spawnOnce`, and a spawn that failed for want of a resource (EMFILE,
   * EAGAIN, …) is tried again, spending no budget, until it works: see
   * `shortage.ts`. The waits between tries are interruptible.
   */
  const spawnInto = (taskId: TaskId, transition: (pid: number) => Slot.Transition) =>
    Shortage.retrying(spawnOnce(taskId, transition), { whose: { taskId }, publish, now })

  /** Surges: replacements started beside a slot's live worker (see `surge.ts`). */
  const surges = Surge.make({ cfg, spawn: spawnOnce, ready: readySignal, apply, publish, now, reapers })

  /** A worker's life once spawned, until it ends (see `life.ts`). */
  const live = Life.make({
    cfg,
    mailbox: (taskId) => mailboxes.get(taskId)!,
    ready: readySignal,
    apply,
    publish,
    now,
    monotonic,
    surges,
    recycle: (taskId, reason, pid) =>
      FiberSet.run(
        recyclers,
        recycleLock.withPermits(1)(Effect.ignore(replace(taskId, recycleHow, "recycle", { reason, pid })))
      )
  })

  /** Recycles replace a worker beside the live one where that is safe: the sockets are shared. */
  const recycleHow: "surge" | "replace" = sockets.length > 0 || cfg.mode === "cluster" ? "surge" : "replace"

  /**
   * One incarnation in a scope of its own. The spawn, its `Spawned` state and
   * its `Started` event are one uninterruptible step, so every process started
   * is told. Interrupted, the scope's release stops the worker and waits for it,
   * and the stop is told as an event. Ended by the worker's own exit, the rest
   * of its process group is stopped by a reaper, and the slot goes on at once.
   */
  const incarnation = (taskId: TaskId, adopted: Surge.Acquired | undefined, link: Tracer.AnySpan | undefined) =>
    Effect.acquireUseRelease(
      adopted === undefined
        ? spawnInto(taskId, (pid) => ({ _tag: "Spawned", pid, at: now() }))
        : Effect.as(
            apply(taskId, { _tag: "TookOver", pid: adopted.handle.pid, at: now() }).pipe(
              Effect.tap(() => Effect.sync(() => surges.tookOver(taskId)))
            ),
            adopted
          ),
      ({ handle }) =>
        Effect.uninterruptibleMask((restore) =>
          Effect.gen(function* () {
            yield* Effect.annotateCurrentSpan({ "process.pid": handle.pid })
            const number = Option.match(Slot.get(SubscriptionRef.getUnsafe(table), taskId), {
              onNone: () => 0,
              onSome: (s) => s.incarnation
            })
            const ended = yield* restore(live(taskId, handle, adopted !== undefined, number))
            yield* Mailbox.ended(mailboxes.get(taskId)!, number, Life.endCause(ended))
            return yield* tell(taskId, ended)
          })
        ),
      ({ handle, scope }, exit) => {
        if (Exit.isSuccess(exit)) {
          return Effect.asVoid(FiberSet.run(reapers, Effect.uninterruptible(Scope.close(scope, Exit.void))))
        }
        return Scope.close(scope, exit).pipe(Effect.andThen(stopped(taskId, handle)))
      }
    ).pipe(
      Effect.withSpan("prefork.worker", {
        attributes: { "prefork.task_id": taskId },
        // A worker started by a reload or a restart links to its span (the slot's fiber is not its child).
        links: link === undefined ? [] : [{ span: link, attributes: {} }]
      })
    )

  /** A worker the supervisor stopped for good (it is stopping, or the slot was scaled away). */
  const stopped = (taskId: TaskId, handle: ProcessHandle) =>
    Effect.flatMap(handle.exitStatus, (status) =>
      apply(taskId, { _tag: "Stopped" }).pipe(
        Effect.andThen(
          Option.isNone(status)
            ? Effect.void
            : Effect.logDebug(`child ${taskId} (pid ${handle.pid}) stopped: ${ExitStatus.describe(status.value)}`).pipe(
                Effect.annotateLogs({ taskId, pid: handle.pid }),
                Effect.andThen(
                  publish({
                    _tag: "Exited",
                    taskId,
                    pid: handle.pid,
                    status: status.value,
                    at: now(),
                    restart: false,
                    notReady: Option.none(),
                    requested: false,
                    stopped: true
                  })
                )
              )
        )
      )
    )

  const logExit = (taskId: TaskId, ended: Life.Ended, restart: boolean) => {
    const { notReady, pid, requested, status } = ended
    const what = Option.isSome(notReady)
      ? `not ready within ${notReady.value.timeoutMillis} ms`
      : ended.reason?._tag === "Unresponsive"
        ? `unresponsive (no heartbeat for ${ended.reason.timeoutMillis} ms), ${ExitStatus.describe(status)}`
        : ended.reason?._tag === "Recycled"
          ? `${ExitStatus.describe(status)} (recycled: ${ended.reason.reason}${ended.next === undefined ? "" : `, replaced by pid ${ended.next.handle.pid}`})`
          : ended.next !== undefined
            ? `${ExitStatus.describe(status)} (replaced by pid ${ended.next.handle.pid})`
            : requested
              ? `${ExitStatus.describe(status)} (restart requested)`
              : ExitStatus.describe(status)
    const line = `child ${taskId} (pid ${pid}) ${what}${restart && ended.next === undefined ? ", restarting" : ""}`
    const normal =
      requested || (!isFailureReason(ended.reason) && Option.isNone(notReady) && RestartPolicy.isNormal(policy, status))
    return (normal ? Effect.logInfo(line) : Effect.logWarning(line)).pipe(
      Effect.annotateLogs({
        taskId,
        pid,
        ...(status._tag === "Exited" ? { code: status.code } : { signal: status.signal })
      })
    )
  }

  const remember = (record: ExitRecord) => {
    exits.push(record)
    // A history, not a log: bounded however long a crash loop runs.
    if (exits.length > EXIT_HISTORY) exits.shift()
  }

  /**
   * Tells an exit the slot's fiber has seen: its record, the slot's state, the
   * Tornado log line and the `Exited` event. Run uninterruptibly right after
   * the exit is seen, so no exit goes untold, whenever the slot is stopped.
   */
  const tell = (taskId: TaskId, ended: Life.Ended) =>
    Effect.gen(function* () {
      const { notReady, pid, requested, status } = ended
      const at = now()
      const reason: ExitReason | undefined = Option.isSome(notReady) ? notReady.value : ended.reason
      const record = new ExitRecord({
        taskId,
        pid,
        status,
        at,
        ...(Option.isSome(notReady) ? { notReady: notReady.value } : {}),
        ...(reason === undefined ? {} : { reason })
      })
      remember(record)
      // An exit seen while the supervisor stops this slot is not a restart and spends no budget.
      const tb = SubscriptionRef.getUnsafe(table)
      const stopping = tb.closed || Option.exists(Slot.get(tb, taskId), (s) => s.phase === "stopping")
      const restart =
        !stopping &&
        (requested ||
          (isFailureReason(reason) ? policy.restart !== "never" : RestartPolicy.shouldRestart(policy, status)))
      if (requested) requestedExits.add(record)
      if (requested && restart) {
        yield* Metrics.recordRestart(
          reason?._tag === "Recycled" ? reason.reason : ended.by === "reload" ? "reload" : "restart"
        )
      }
      yield* apply(taskId, { _tag: "Exited", status, restart })
      yield* logExit(taskId, ended, restart)
      yield* publish({
        _tag: "Exited",
        taskId,
        pid,
        status,
        at,
        restart,
        notReady,
        requested,
        ...(reason === undefined ? {} : { reason })
      })
      yield* Effect.annotateCurrentSpan(exitAttributes(status, reason))
      return { ...ended, endedAt: monotonic(), record, restart }
    })

  /** One slot: start, wait, classify the exit, spend the budget, restart or stop. */
  const supervise = Effect.fnUntraced(function* (taskId: TaskId) {
    let failures = 0
    let next: Surge.Acquired | undefined
    let link: Tracer.AnySpan | undefined
    while (true) {
      const {
        endedAt,
        next: replacement,
        record,
        requested,
        restart,
        span,
        startedAt
      } = yield* incarnation(taskId, next, link)
      next = replacement
      link = span
      if (!restart) return
      if (requested) {
        failures = 0
        yield* Effect.yieldNow
        continue
      }
      failures = endedAt - startedAt >= resetAfter ? 1 : failures + 1
      const delay = yield* budgetLock.withPermits(1)(step(record))
      if (Option.isNone(delay)) {
        return yield* new TooManyRestarts({
          restarts,
          exits: exits.filter(
            (e) =>
              !requestedExits.has(e) && (isFailureReason(e.reason) || RestartPolicy.shouldRestart(policy, e.status))
          )
        })
      }
      restarts++
      counted.push(endedAt)
      if (counted.length > EXIT_HISTORY) counted.shift()
      yield* apply(taskId, { _tag: "Counted" })
      yield* Metrics.recordRestart(
        record.reason?._tag === "NotReady"
          ? "not_ready"
          : record.reason?._tag === "Unresponsive"
            ? "unresponsive"
            : "exit"
      )
      yield* updateBudget
      // Under an intensity window, this restart gives its budget back once it leaves the window.
      const window = policy.limits?.intensity?.within
      if (window !== undefined) yield* Effect.forkIn(Effect.andThen(Effect.sleep(window), updateBudget), scope)
      const wait = Duration.max(delay.value, RestartPolicy.backoffDelay(policy, failures))
      // Never respawn synchronously from the exit: let the primary's timers and I/O run first.
      if (Duration.isZero(wait)) {
        yield* Effect.yieldNow
      } else {
        yield* Effect.logInfo(`child ${taskId} restarting in ${Duration.format(wait)}`).pipe(
          Effect.annotateLogs({ taskId, delayMillis: Duration.toMillis(wait) })
        )
        yield* Effect.sleep(wait)
      }
    }
  })

  /** The first failure of a slot (budget spent, spawn failed): it ends the run. */
  let failure: Cause.Cause<Failure> | undefined

  // Slot fibers run with the context of `start`, whichever fiber adds them (`scale`).
  const runSlot = yield* FiberMap.runtime(slots)<never>()
  const launch = (taskId: TaskId) =>
    Effect.flatMap(Mailbox.make(), (mailbox) =>
      Effect.sync(() => {
        mailboxes.set(taskId, mailbox)
        runSlot(taskId, slot(taskId, mailbox))
      })
    )
  const slot = (taskId: TaskId, mailbox: Mailbox.Mailbox) =>
    supervise(taskId).pipe(
      // A replacement between its surge and its takeover when the slot ends is stopped too.
      Effect.onExit(() =>
        Effect.suspend(() => {
          const next = surges.pending(taskId)
          return next === undefined ? Effect.void : surges.abandonNow(taskId, next)
        })
      ),
      Effect.onExit((exit) => {
        if (Exit.isFailure(exit) && !Cause.hasInterruptsOnly(exit.cause)) failure ??= exit.cause
        // A slot scaled away leaves the table once its worker is gone; one stopped for good says so.
        return SubscriptionRef.update(table, (tb) =>
          Option.match(Slot.get(tb, taskId), {
            onNone: () => tb,
            onSome: (slot) =>
              slot.removing
                ? Slot.drop(tb, taskId)
                : slot.phase === "stopping"
                  ? Slot.update(tb, taskId, { _tag: "Stopped" })
                  : tb
          })
        ).pipe(Effect.andThen(cfg.maxMemory === undefined ? Effect.void : Metrics.clearWorkerMemory(taskId)))
      }),
      // Whatever is still asked of the slot is answered: it is gone.
      Effect.onExit(() =>
        Effect.suspend(() => {
          if (mailboxes.get(taskId) === mailbox) mailboxes.delete(taskId)
          return Mailbox.close(mailbox)
        })
      )
    )

  /** The end of the run, whatever caused it: stop every slot, then wait for every reaper. */
  const shutdown = (exit: Exit.Exit<unknown, Failure>) =>
    Effect.gen(function* () {
      const tb = yield* SubscriptionRef.updateAndGet(table, (tb) => ({ ...tb, closed: true }))
      const live = Slot.list(tb).filter((slot) => slot.phase === "starting" || slot.phase === "running").length
      if (Exit.isFailure(exit) && live > 0) {
        const what = Cause.hasInterruptsOnly(exit.cause) ? "Stopping" : "Giving up: stopping"
        yield* Effect.logInfo(
          `${what} ${live} process${live === 1 ? "" : "es"} (SIGTERM, then SIGKILL after ${Duration.toMillis(cfg.stopTimeout)} ms)`
        )
      }
      for (const slot of Slot.list(tb)) {
        if (slot.phase !== "exited" && slot.phase !== "stopped") {
          yield* apply(slot.taskId, { _tag: "Stopping", remove: false })
        }
      }
      // The supervisor's own copy of each socket goes now, not after the last worker: the workers close theirs
      // as they get SIGTERM, and then the port refuses new connections (a client can retry elsewhere) instead of
      // queueing them in a backlog that nobody will accept, to be reset when the supervisor exits.
      yield* Scope.close(socketScope, Exit.void)
      yield* Effect.all(
        [FiberMap.clear(slots), FiberSet.clear(recyclers), Effect.andThen(FiberSet.clear(spareFibers), pool.drain)],
        { concurrency: "unbounded", discard: true }
      )
      yield* FiberSet.awaitEmpty(reapers)
    })

  // The first failure ends the run at once; otherwise it ends when every slot is done.
  const run = Effect.raceFirst(
    FiberMap.join(slots) as Effect.Effect<never, Failure>,
    FiberMap.awaitEmpty(slots).pipe(
      Effect.andThen(Effect.suspend(() => (failure === undefined ? Effect.void : Effect.failCause(failure))))
    )
  ).pipe(
    Effect.onExit(shutdown),
    Effect.map((): Summary => ({ restarts, exits: exits.slice() }))
  )

  // Launching the slots and forking the run that stops them is one step: an interruption comes before or after.
  const fiber = yield* Effect.uninterruptible(
    (cfg.processesReason === undefined ? Effect.void : Effect.logInfo(cfg.processesReason)).pipe(
      Effect.andThen(Effect.logInfo(`Starting ${cfg.processes} process${cfg.processes === 1 ? "" : "es"}`)),
      Effect.andThen(
        Effect.suspend(() =>
          Effect.forEach(Slot.list(SubscriptionRef.getUnsafe(table)), (slot) => launch(slot.taskId), { discard: true })
        )
      ),
      Effect.andThen(cfg.spares > 0 ? FiberSet.run(spareFibers, Effect.interruptible(pool.keep)) : Effect.void),
      // Started at once, so that its shutdown runs whenever it is interrupted, however soon.
      Effect.andThen(Effect.forkScoped(Effect.interruptible(run), { startImmediately: true }))
    )
  )

  // The `prefork.workers` gauge (and the budget left) follow the table and the spares as they change.
  yield* Stream.merge(SubscriptionRef.changes(table), SubscriptionRef.changes(pool.spares)).pipe(
    Stream.runForEach(() =>
      Metrics.setWorkers({
        ...SubscriptionRef.getUnsafe(table).counts,
        spare: SubscriptionRef.getUnsafe(pool.spares).length
      }).pipe(Effect.andThen(updateBudget))
    ),
    Effect.forkScoped
  )

  const awaitReady: Effect.Effect<void, Failure> = Effect.flatMap(
    waitFor((tb) => tb.closed || Slot.allRunning(tb)),
    (tb) => (tb.closed ? Effect.asVoid(Fiber.join(fiber)) : Effect.void)
  )

  /**
   * Asks a slot's worker to be replaced: an intent posted to the slot's
   * mailbox, in one synchronous step, about the worker it has now; then waits
   * for the slot's answer (see `mailbox.ts`). A caller that stops waiting
   * leaves the slot to finish. A recycle is for one worker: if the slot has
   * another by now, its reason is gone.
   */
  const replace = (
    taskId: number,
    how: "replace" | "surge",
    by: Mailbox.Intent["by"],
    recycle?: { readonly reason: Recycled; readonly pid: number }
  ): Effect.Effect<Mailbox.Answer, ReloadFailed> =>
    Effect.flatMap(Effect.option(Effect.currentSpan), (span) =>
      Effect.suspend(() => {
        const tb = SubscriptionRef.getUnsafe(table)
        const slot = Slot.get(tb, taskId)
        const gone = Effect.succeed<Mailbox.Answer>({ _tag: "Gone" })
        if (tb.closed || Option.isNone(slot) || slot.value.removing) return gone
        const { incarnation, phase } = slot.value
        if (phase === "exited" || phase === "stopped" || phase === "stopping") return gone
        if (recycle !== undefined && !Option.contains(slot.value.pid, recycle.pid)) {
          return Effect.succeed<Mailbox.Answer>({ _tag: "Superseded", by: "exit" })
        }
        return Mailbox.ask(
          mailboxes.get(taskId),
          Mailbox.intent({ by, how, incarnation, reason: recycle?.reason, span: Option.getOrUndefined(span) })
        )
      })
    )

  const restart = (taskId: number): Effect.Effect<void> =>
    Effect.asVoid(Effect.catch(replace(taskId, "replace", "restart"), () => Effect.void))

  const reload = (options: ReloadOptions = {}): Effect.Effect<void, ReloadFailed | InvalidOptions> =>
    Effect.suspend((): Effect.Effect<void, ReloadFailed | InvalidOptions> => {
      const concurrency = options.concurrency ?? 1
      if (!Number.isInteger(concurrency) || concurrency < 1) {
        return Effect.fail(
          new InvalidOptions({
            field: "concurrency",
            message: `reload concurrency must be a whole number >= 1, got ${String(concurrency)}`
          })
        )
      }
      const how = options.surge === false ? "replace" : "surge"
      const reloaded: Array<number> = []
      // The spares run the code being replaced: they are stopped, and new ones boot with the new code.
      return Effect.andThen(
        cfg.spares > 0 ? pool.drain : Effect.void,
        Effect.forEach(
          Slot.list(SubscriptionRef.getUnsafe(table)).filter((s) => !s.removing),
          (slot) =>
            Effect.tap(replace(slot.taskId, how, "reload"), () => Effect.sync(() => reloaded.push(slot.taskId))),
          { concurrency, discard: true }
        ).pipe(
          Effect.mapError(
            (error) =>
              new ReloadFailed({
                taskId: error.taskId,
                ...(error.pid === undefined ? {} : { pid: error.pid }),
                reloaded: reloaded.slice(),
                message: error.message
              })
          ),
          Effect.withSpan("prefork.reload", {
            attributes: { "prefork.reload.surge": how === "surge", "prefork.reload.concurrency": concurrency }
          })
        )
      )
    })

  const scaleLock = Semaphore.makeUnsafe(1)
  const scale = (processes: number): Effect.Effect<void, InvalidOptions> =>
    Effect.suspend(() => {
      if (!Number.isInteger(processes) || processes < 1 || processes > MAX_PROCESSES) {
        return Effect.fail(
          new InvalidOptions({
            field: "processes",
            message: `scale needs a whole number of processes from 1 to ${MAX_PROCESSES}, got ${processes}`
          })
        )
      }
      return scaleLock.withPermits(1)(
        Effect.gen(function* () {
          // Slots still leaving from an earlier (interrupted) scale-down go first: their task ids come back.
          const tb = yield* waitFor((tb) => tb.closed || tb.removing === 0)
          const from = tb.target
          if (tb.closed || processes === from) return
          if (processes > from) {
            // Grown only if the supervision is not ending by now (checked in the same step): nothing starts after a stop.
            const grown = yield* Effect.uninterruptible(
              SubscriptionRef.modify(table, (tb): readonly [boolean, Slot.Table] =>
                tb.closed ? [false, tb] : [true, Slot.grow(tb, processes)]
              ).pipe(
                Effect.tap((grown) =>
                  grown
                    ? Effect.forEach(
                        Array.from({ length: processes - from }, (_, i) => TaskId(from + i)),
                        launch,
                        { discard: true }
                      )
                    : Effect.void
                )
              )
            )
            if (!grown) return
            return yield* Effect.logInfo(`Scaled from ${from} to ${processes} process${processes === 1 ? "" : "es"}`)
          }
          const removed = Slot.list(tb).filter((s) => s.taskId >= processes)
          yield* Effect.logInfo(
            `Scaling from ${from} to ${processes} process${processes === 1 ? "" : "es"}: stopping ${removed
              .map((s) => `child ${s.taskId}${Option.isSome(s.pid) ? ` (pid ${s.pid.value})` : ""}`)
              .join(", ")}`
          )
          // Marking the slots and interrupting their fibers is one step; waiting for them may be given up.
          yield* Effect.uninterruptible(
            Effect.gen(function* () {
              for (const slot of removed) yield* apply(slot.taskId, { _tag: "Stopping", remove: true })
              for (const slot of removed) {
                const running = FiberMap.getUnsafe(slots, slot.taskId)
                if (Option.isSome(running)) running.value.interruptUnsafe()
                else yield* SubscriptionRef.update(table, (tb) => Slot.drop(tb, slot.taskId))
              }
            })
          )
          yield* waitFor((tb) => tb.closed || tb.removing === 0)
        }).pipe(Effect.withSpan("prefork.scale", { attributes: { "prefork.scale.to": processes } }))
      )
    })

  return {
    sockets,
    fiber,
    status: Effect.map(SubscriptionRef.get(table), (tb) => Slot.list(tb).map(Slot.status)),
    processes: () => SubscriptionRef.getUnsafe(table).target,
    awaitReady,
    restart,
    reload,
    scale,
    spares: Effect.map(SubscriptionRef.get(pool.spares), (p) => p.map((spare) => spare.handle.pid))
  }
})
