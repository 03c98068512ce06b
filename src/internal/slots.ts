/**
 * The supervision loop: one fiber per task slot. The first slot that fails
 * (budget spent, spawn failed) interrupts its siblings, whose scopes stop their
 * processes, before the failure surfaces. Slots can be added and removed while
 * it runs (`scale`), and one slot's worker can be replaced on request
 * (`restart`), which spends no budget.
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Semaphore from "effect/Semaphore"
import { ExitRecord, InvalidOptions, NotReady, type SpawnFailed, TooManyRestarts } from "../Errors.ts"
import * as ExitStatus from "../ExitStatus.ts"
import { type ProcessHandle, ProcessSpawner, type SpawnRequest } from "../ProcessSpawner.ts"
import * as RestartPolicy from "../RestartPolicy.ts"
import type { Config, Event, SlotStatus, Summary } from "../Supervisor.ts"
import { ENV_VAR, TaskId } from "../TaskId.ts"

type MutableSlot = { -readonly [K in keyof SlotStatus]: SlotStatus[K] }

interface Ended {
  readonly pid: number
  readonly status: ExitStatus.ExitStatus
  readonly startedAt: number
  readonly notReady: Option.Option<NotReady>
  /** The worker was stopped by `restart`: start it again at once, spending no budget. */
  readonly requested: boolean
}

/** What only the loop sees of a slot: its fiber, restart requests, who waits for its next ready worker. */
interface Control {
  fiber: Fiber.Fiber<void, TooManyRestarts | SpawnFailed> | undefined
  /** Incarnations started so far; the current one is number `started`. */
  started: number
  /** The live worker of the current incarnation, if any. */
  handle: ProcessHandle | undefined
  /** A restart was asked for during the current incarnation. */
  requested: boolean
  /** Resolved when an incarnation numbered at least `from` is ready, or the slot is done. */
  waiters: Array<{ readonly from: number; readonly deferred: Deferred.Deferred<void> }>
}

type Failure = TooManyRestarts | SpawnFailed

/** How many of the most recent exits a supervisor keeps for `Summary` and `TooManyRestarts`. */
export const EXIT_HISTORY = 1000

/** @internal */
export const runSlots = Effect.fnUntraced(function* (cfg: Config, publish: (event: Event) => Effect.Effect<unknown>) {
  const spawner = yield* ProcessSpawner
  const clock = yield* Clock.Clock
  const step = yield* RestartPolicy.start(cfg.policy)
  const budgetLock = Semaphore.makeUnsafe(1)
  const { policy } = cfg
  const resetAfter = Duration.toMillis(policy.resetAfter)
  const exits: Array<ExitRecord> = []
  /** Exits caused by `restart`: never restarts of a failure, never part of `TooManyRestarts`. */
  const requestedExits = new WeakSet<ExitRecord>()
  let restarts = 0

  const controls = new WeakMap<MutableSlot, Control>()
  const newSlot = (i: number): MutableSlot => {
    const slot: MutableSlot = {
      taskId: TaskId(i),
      state: "starting",
      pid: Option.none(),
      restarts: 0,
      startedAt: Option.none(),
      lastExit: Option.none()
    }
    controls.set(slot, { fiber: undefined, started: 0, handle: undefined, requested: false, waiters: [] })
    return slot
  }
  const control = (slot: MutableSlot): Control => controls.get(slot)!
  const slots: Array<MutableSlot> = Array.from({ length: cfg.processes }, (_, i) => newSlot(i))

  // "All ready": slots ready right now, and who waits for all of them.
  let readyCount = 0
  let readyWaiters: Array<Deferred.Deferred<void>> = []
  const checkAllReady = () => {
    if (readyCount !== slots.length) return
    for (const waiter of readyWaiters) Deferred.doneUnsafe(waiter, Effect.void)
    readyWaiters = []
  }
  /** Counts a slot in or out of "ready"; a slot counted in is `running` before anyone waiting is told. */
  const setReady = (slot: MutableSlot, ready: boolean) => {
    if ((slot.state === "running") === ready) return
    readyCount += ready ? 1 : -1
    if (ready) {
      slot.state = "running"
      const ctl = control(slot)
      const due = ctl.waiters.filter((w) => w.from <= ctl.started)
      ctl.waiters = ctl.waiters.filter((w) => w.from > ctl.started)
      for (const w of due) Deferred.doneUnsafe(w.deferred, Effect.void)
    }
    checkAllReady()
  }
  /** A slot that will never be ready again releases whoever waits for it. */
  const releaseWaiters = (slot: MutableSlot) => {
    const ctl = control(slot)
    for (const w of ctl.waiters) Deferred.doneUnsafe(w.deferred, Effect.void)
    ctl.waiters = []
  }
  const allReady = Effect.suspend(() => {
    if (readyCount === slots.length) return Effect.void
    const waiter = Deferred.makeUnsafe<void>()
    readyWaiters.push(waiter)
    // A caller that gives up (interrupted, or the supervision ended first) leaves nothing behind.
    return Deferred.await(waiter).pipe(
      Effect.onInterrupt(() =>
        Effect.sync(() => {
          readyWaiters = readyWaiters.filter((w) => w !== waiter)
        })
      )
    )
  })

  const request = (taskId: TaskId): SpawnRequest => ({
    taskId,
    mode: cfg.mode,
    command: cfg.command,
    args: cfg.args,
    execArgv: cfg.execArgv,
    env: { ...cfg.env, [ENV_VAR]: String(taskId) },
    cwd: cfg.cwd,
    stdio: cfg.stdio,
    onOutput: cfg.onOutput,
    readiness: typeof cfg.ready === "object" ? "spawn" : cfg.ready,
    stopTimeout: cfg.stopTimeout
  })

  const readySignal = (handle: ProcessHandle): Effect.Effect<void> =>
    typeof cfg.ready === "object" ? Effect.sleep(cfg.ready.delay) : handle.ready

  /**
   * One incarnation: spawn, wait until ready, wait for the exit. Interrupted, its
   * scope stops the process. `restart` stops the worker from its caller's fiber
   * (`stop` is idempotent, so a supervisor stopping meanwhile never signals it
   * twice) and marks the exit as requested.
   */
  const incarnation = (slot: MutableSlot) =>
    Effect.scoped(
      Effect.gen(function* () {
        const ctl = control(slot)
        const handle = yield* spawner.spawn(request(slot.taskId))
        const startedAt = clock.currentTimeMillisUnsafe()
        const { pid } = handle
        ctl.started++
        ctl.handle = handle
        ctl.requested = false
        slot.pid = Option.some(pid)
        slot.startedAt = Option.some(startedAt)
        yield* publish({ _tag: "Started", taskId: slot.taskId, pid, at: startedAt })
        const life = Effect.gen(function* () {
          if (cfg.ready !== "spawn") {
            const outcome = yield* Effect.raceFirst(
              Effect.as(readySignal(handle), "ready" as const),
              Effect.as(handle.exit, "exited" as const)
            ).pipe(Effect.timeoutOption(cfg.readyTimeout))
            if (Option.isNone(outcome)) {
              const notReady = new NotReady({
                taskId: slot.taskId,
                pid,
                timeoutMillis: Duration.toMillis(cfg.readyTimeout)
              })
              const status = yield* handle.stop
              return { pid, status, startedAt, notReady: Option.some(notReady), requested: false } satisfies Ended
            }
          }
          if (Option.isNone(yield* handle.exitStatus)) {
            // Published first, so whoever `awaitReady` wakes finds the event already in the stream.
            yield* publish({ _tag: "Ready", taskId: slot.taskId, pid, at: clock.currentTimeMillisUnsafe() })
            setReady(slot, true)
          }
          const status = yield* handle.exit
          return { pid, status, startedAt, notReady: Option.none(), requested: false } satisfies Ended
        })
        const ended = yield* life
        // A restart was asked for while this worker lived: its exit is the restart's, not a failure.
        return ctl.requested ? { ...ended, notReady: Option.none(), requested: true } : ended
      })
    ).pipe(
      Effect.ensuring(
        Effect.sync(() => {
          const ctl = control(slot)
          ctl.handle = undefined
          ctl.requested = false
        })
      )
    )

  const logExit = (slot: MutableSlot, ended: Ended, restart: boolean) => {
    const { notReady, pid, requested, status } = ended
    const what = Option.isSome(notReady)
      ? `not ready within ${notReady.value.timeoutMillis} ms`
      : requested
        ? `${ExitStatus.describe(status)} (restart requested)`
        : ExitStatus.describe(status)
    const line = `child ${slot.taskId} (pid ${pid}) ${what}${restart ? ", restarting" : ""}`
    const log =
      requested || (Option.isNone(notReady) && RestartPolicy.isNormal(policy, status))
        ? Effect.logInfo(line)
        : Effect.logWarning(line)
    return log.pipe(
      Effect.annotateLogs({
        taskId: slot.taskId,
        pid,
        ...(status._tag === "Exited" ? { code: status.code } : { signal: status.signal })
      })
    )
  }

  const supervise = Effect.fnUntraced(function* (slot: MutableSlot) {
    let failures = 0
    while (true) {
      slot.state = "starting"
      const ended = yield* incarnation(slot)
      const { notReady, pid, requested, startedAt, status } = ended
      const at = clock.currentTimeMillisUnsafe()
      const record = new ExitRecord({
        taskId: slot.taskId,
        pid,
        status,
        at,
        ...(Option.isSome(notReady) ? { notReady: notReady.value } : {})
      })
      exits.push(record)
      // A history, not a log: bounded however long a crash loop runs.
      if (exits.length > EXIT_HISTORY) exits.shift()
      setReady(slot, false)
      slot.pid = Option.none()
      slot.lastExit = Option.some(status)
      const restart =
        requested ||
        (Option.isSome(notReady) ? policy.restart !== "never" : RestartPolicy.shouldRestart(policy, status))
      yield* logExit(slot, ended, restart)
      yield* publish({ _tag: "Exited", taskId: slot.taskId, pid, status, at, restart, notReady, requested })
      if (requested) {
        requestedExits.add(record)
        failures = 0
        slot.state = "restarting"
        yield* Effect.yieldNow
        continue
      }
      if (!restart) {
        slot.state = "exited"
        return
      }
      slot.state = "restarting"
      failures = at - startedAt >= resetAfter ? 1 : failures + 1
      const delay = yield* budgetLock.withPermits(1)(step(record))
      if (Option.isNone(delay)) {
        return yield* new TooManyRestarts({
          restarts,
          exits: exits.filter(
            (e) => !requestedExits.has(e) && (e.notReady !== undefined || RestartPolicy.shouldRestart(policy, e.status))
          )
        })
      }
      restarts++
      slot.restarts++
      const wait = Duration.max(delay.value, RestartPolicy.backoffDelay(policy, failures))
      // Never respawn synchronously from the exit: let the primary's timers and I/O run first.
      yield* Duration.isZero(wait) ? Effect.yieldNow : Effect.sleep(wait)
    }
  })

  // The slot fibers. They are started with the context of `run` (`fork`, set
  // when it starts), from whichever fiber asks (`scale`), and are all
  // interrupted together when `run` ends. The first failure ends `run`.
  let fork: ((effect: Effect.Effect<void, Failure>) => Fiber.Fiber<void, Failure>) | undefined
  let live = 0
  let closed = false
  const failed = Deferred.makeUnsafe<never, Failure>()
  const finished = Deferred.makeUnsafe<void>()
  const launch = (slot: MutableSlot) => {
    live++
    const fiber = fork!(
      supervise(slot).pipe(
        Effect.onInterrupt(() =>
          Effect.sync(() => {
            setReady(slot, false)
            slot.state = "stopped"
            slot.pid = Option.none()
          })
        ),
        Effect.ensuring(Effect.sync(() => releaseWaiters(slot)))
      )
    )
    control(slot).fiber = fiber
    fiber.addObserver((exit) => {
      live--
      if (Exit.isFailure(exit) && !Cause.hasInterruptsOnly(exit.cause)) {
        Deferred.doneUnsafe(failed, exit as Exit.Exit<never, Failure>)
      } else if (live === 0) {
        Deferred.doneUnsafe(finished, Effect.void)
      }
    })
  }

  const run: Effect.Effect<Summary, Failure> = Effect.suspend(() =>
    Effect.logInfo(`Starting ${slots.length} processes`)
  ).pipe(
    Effect.andThen(Effect.context<never>()),
    Effect.flatMap((context) => {
      fork = (effect) => Effect.runForkWith(context)(effect)
      for (const slot of slots) launch(slot)
      return Effect.raceFirst(Deferred.await(failed), Deferred.await(finished))
    }),
    Effect.onExit((exit) =>
      Effect.suspend(() => {
        closed = true
        const live = slots.filter((slot) => Option.isSome(slot.pid)).length
        const what = Exit.isSuccess(exit)
          ? undefined
          : Cause.hasInterruptsOnly(exit.cause)
            ? "Stopping"
            : "Giving up: stopping"
        const ms = Duration.toMillis(cfg.stopTimeout)
        return (
          what === undefined || live === 0
            ? Effect.void
            : Effect.logInfo(`${what} ${live} process${live === 1 ? "" : "es"} (SIGTERM, then SIGKILL after ${ms} ms)`)
        ).pipe(Effect.andThen(Fiber.interruptAll(slots.flatMap((slot) => control(slot).fiber ?? []))))
      })
    ),
    Effect.map((): Summary => ({ restarts, exits: exits.slice() }))
  )

  const restart = (taskId: number): Effect.Effect<void> =>
    Effect.suspend(() => {
      const slot = slots.find((s) => s.taskId === taskId)
      if (slot === undefined || closed || slot.state === "exited" || slot.state === "stopped") return Effect.void
      const ctl = control(slot)
      const deferred = Deferred.makeUnsafe<void>()
      // A live worker is replaced by incarnation `started + 1`; between two incarnations, the next is that one too.
      ctl.waiters.push({ from: ctl.started + 1, deferred })
      const handle = ctl.handle
      if (handle === undefined) return Deferred.await(deferred)
      ctl.requested = true
      return handle.stop.pipe(Effect.andThen(Deferred.await(deferred)))
    })

  const reload: Effect.Effect<void> = Effect.suspend(() =>
    Effect.forEach(
      slots.map((s) => s.taskId),
      restart,
      { discard: true }
    )
  )

  const scaleLock = Semaphore.makeUnsafe(1)
  const scale = (processes: number): Effect.Effect<void, InvalidOptions> =>
    Effect.suspend(() => {
      if (!Number.isInteger(processes) || processes < 1) {
        return Effect.fail(
          new InvalidOptions({
            field: "processes",
            message: `scale needs a whole number of processes >= 1, got ${processes}`
          })
        )
      }
      return scaleLock.withPermits(1)(
        Effect.suspend(() => {
          const from = slots.length
          if (closed || processes === from) return Effect.void
          if (processes > from) {
            const added = Array.from({ length: processes - from }, (_, i) => newSlot(from + i))
            slots.push(...added)
            // Before `run` has started, it starts every slot itself.
            if (fork !== undefined) for (const slot of added) launch(slot)
            return Effect.logInfo(`Scaled from ${from} to ${processes} processes`)
          }
          const removed = slots.slice(processes)
          if (fork === undefined) {
            slots.splice(processes)
            return Effect.void
          }
          return Effect.logInfo(
            `Scaling from ${from} to ${processes} processes: stopping ${removed
              .map((s) => `child ${s.taskId}${s.pid._tag === "Some" ? ` (pid ${s.pid.value})` : ""}`)
              .join(", ")}`
          ).pipe(
            Effect.andThen(Fiber.interruptAll(removed.flatMap((slot) => control(slot).fiber ?? []))),
            Effect.andThen(
              Effect.sync(() => {
                for (const slot of removed) {
                  const i = slots.indexOf(slot)
                  if (i !== -1) slots.splice(i, 1)
                }
                checkAllReady()
              })
            )
          )
        })
      )
    })

  const status = Effect.sync((): ReadonlyArray<SlotStatus> => slots.map((s) => ({ ...s })))
  const count = () => slots.length
  return { run, status, allReady, restart, reload, scale, count } as const
})
