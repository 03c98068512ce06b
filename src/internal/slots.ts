/**
 * The supervision loop: one fiber per task slot, all in one `forEach`, so the
 * first slot that fails (budget spent, spawn failed) interrupts its siblings,
 * whose scopes stop their processes, before the failure surfaces.
 */
import { Clock, Deferred, Duration, Effect, Option, Semaphore } from "effect"
import { ExitRecord, NotReady, type SpawnFailed, TooManyRestarts } from "../Errors.ts"
import * as ExitStatus from "../ExitStatus.ts"
import { type ProcessHandle, ProcessSpawner, type SpawnRequest, stop } from "../ProcessSpawner.ts"
import * as RestartPolicy from "../RestartPolicy.ts"
import type { Config, Event, SlotStatus, Summary } from "../Supervisor.ts"
import { ENV_VAR, TaskId } from "../TaskId.ts"

type MutableSlot = { -readonly [K in keyof SlotStatus]: SlotStatus[K] }

interface Ended {
  readonly pid: number
  readonly status: ExitStatus.ExitStatus
  readonly startedAt: number
  readonly notReady: Option.Option<NotReady>
}

/** @internal */
export const runSlots = Effect.fnUntraced(function*(cfg: Config, publish: (event: Event) => Effect.Effect<unknown>) {
  const spawner = yield* ProcessSpawner
  const clock = yield* Clock.Clock
  const step = yield* RestartPolicy.start(cfg.policy)
  const budgetLock = Semaphore.makeUnsafe(1)
  const { policy } = cfg
  const resetAfter = Duration.toMillis(policy.resetAfter)
  const exits: Array<ExitRecord> = []
  let restarts = 0

  const slots: Array<MutableSlot> = Array.from({ length: cfg.processes }, (_, i) => ({
    taskId: TaskId(i),
    state: "starting",
    pid: Option.none(),
    restarts: 0,
    startedAt: Option.none(),
    lastExit: Option.none()
  }))

  // "All ready": slots ready right now, and who waits for all of them.
  let readyCount = 0
  let readyWaiters: Array<Deferred.Deferred<void>> = []
  const setReady = (slot: MutableSlot, ready: boolean) => {
    if ((slot.state === "running") === ready) return
    readyCount += ready ? 1 : -1
    if (readyCount === slots.length) {
      for (const waiter of readyWaiters) Deferred.doneUnsafe(waiter, Effect.void)
      readyWaiters = []
    }
  }
  const allReady = Effect.suspend(() => {
    if (readyCount === slots.length) return Effect.void
    const waiter = Deferred.makeUnsafe<void>()
    readyWaiters.push(waiter)
    return Deferred.await(waiter)
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

  /** One incarnation: spawn, wait until ready, wait for the exit. Interrupted, its scope stops the process. */
  const incarnation = (slot: MutableSlot) =>
    Effect.scoped(Effect.gen(function*() {
      const handle = yield* spawner.spawn(request(slot.taskId))
      const startedAt = clock.currentTimeMillisUnsafe()
      const { pid } = handle
      slot.pid = Option.some(pid)
      slot.startedAt = Option.some(startedAt)
      yield* publish({ _tag: "Started", taskId: slot.taskId, pid, at: startedAt })
      if (cfg.ready !== "spawn") {
        const outcome = yield* Effect.raceFirst(
          Effect.as(readySignal(handle), "ready" as const),
          Effect.as(handle.exit, "exited" as const)
        ).pipe(Effect.timeoutOption(cfg.readyTimeout))
        if (Option.isNone(outcome)) {
          const notReady = new NotReady({ taskId: slot.taskId, pid, timeoutMillis: Duration.toMillis(cfg.readyTimeout) })
          const status = yield* stop(handle, cfg.stopTimeout)
          return { pid, status, startedAt, notReady: Option.some(notReady) } satisfies Ended
        }
      }
      if (Option.isNone(yield* handle.exitStatus)) {
        setReady(slot, true)
        slot.state = "running"
        yield* publish({ _tag: "Ready", taskId: slot.taskId, pid, at: clock.currentTimeMillisUnsafe() })
      }
      const status = yield* handle.exit
      return { pid, status, startedAt, notReady: Option.none() } satisfies Ended
    }))

  const logExit = (slot: MutableSlot, ended: Ended, restart: boolean) => {
    const { notReady, pid, status } = ended
    const what = Option.isSome(notReady)
      ? `not ready within ${notReady.value.timeoutMillis} ms`
      : ExitStatus.describe(status)
    const line = `child ${slot.taskId} (pid ${pid}) ${what}${restart ? ", restarting" : ""}`
    const log = Option.isNone(notReady) && RestartPolicy.isNormal(policy, status)
      ? Effect.logInfo(line)
      : Effect.logWarning(line)
    return log.pipe(Effect.annotateLogs({
      taskId: slot.taskId,
      pid,
      ...(status._tag === "Exited" ? { code: status.code } : { signal: status.signal })
    }))
  }

  const supervise = Effect.fnUntraced(function*(slot: MutableSlot) {
    let failures = 0
    while (true) {
      slot.state = "starting"
      const ended = yield* incarnation(slot)
      const { notReady, pid, startedAt, status } = ended
      const at = clock.currentTimeMillisUnsafe()
      const record = new ExitRecord({
        taskId: slot.taskId,
        pid,
        status,
        at,
        ...(Option.isSome(notReady) ? { notReady: notReady.value } : {})
      })
      exits.push(record)
      setReady(slot, false)
      slot.pid = Option.none()
      slot.lastExit = Option.some(status)
      const restart = Option.isSome(notReady)
        ? policy.restart !== "never"
        : RestartPolicy.shouldRestart(policy, status)
      yield* logExit(slot, ended, restart)
      yield* publish({ _tag: "Exited", taskId: slot.taskId, pid, status, at, restart, notReady })
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
          exits: exits.filter((e) => e.notReady !== undefined || RestartPolicy.shouldRestart(policy, e.status))
        })
      }
      restarts++
      slot.restarts++
      const wait = Duration.max(delay.value, RestartPolicy.backoffDelay(policy, failures))
      // Never respawn synchronously from the exit: let the primary's timers and I/O run first.
      yield* Duration.isZero(wait) ? Effect.yieldNow : Effect.sleep(wait)
    }
  })

  const run: Effect.Effect<Summary, TooManyRestarts | SpawnFailed> = Effect.logInfo(
    `Starting ${cfg.processes} processes`
  ).pipe(
    Effect.andThen(Effect.forEach(slots, (slot) =>
      supervise(slot).pipe(
        Effect.onInterrupt(() =>
          Effect.sync(() => {
            setReady(slot, false)
            slot.state = "stopped"
            slot.pid = Option.none()
          })
        )
      ), { concurrency: "unbounded", discard: true })),
    Effect.map((): Summary => ({ restarts, exits: exits.slice() }))
  )

  const status = Effect.sync((): ReadonlyArray<SlotStatus> => slots.map((s) => ({ ...s })))
  return { run, status, allReady } as const
})
