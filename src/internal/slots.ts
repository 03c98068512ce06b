/**
 * The supervision loop: one fiber per task slot, all in one `forEach`, so the
 * first slot that fails (budget spent, spawn failed) interrupts its siblings,
 * whose scopes stop their processes, before the failure surfaces.
 */
import { Clock, Duration, Effect, Option, Semaphore } from "effect"
import { ExitRecord, type SpawnFailed, TooManyRestarts } from "../Errors.ts"
import * as ExitStatus from "../ExitStatus.ts"
import { ProcessSpawner, type SpawnRequest } from "../ProcessSpawner.ts"
import * as RestartPolicy from "../RestartPolicy.ts"
import type { Config, Event, SlotStatus, Summary } from "../Supervisor.ts"
import { ENV_VAR, TaskId } from "../TaskId.ts"

type MutableSlot = { -readonly [K in keyof SlotStatus]: SlotStatus[K] }

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
    stopTimeout: cfg.stopTimeout
  })

  /** One incarnation: spawn, wait for the exit. Interrupted, its scope stops the process. */
  const incarnation = (slot: MutableSlot) =>
    Effect.scoped(Effect.gen(function*() {
      const handle = yield* spawner.spawn(request(slot.taskId))
      const at = clock.currentTimeMillisUnsafe()
      slot.state = "running"
      slot.pid = Option.some(handle.pid)
      slot.startedAt = Option.some(at)
      yield* publish({ _tag: "Started", taskId: slot.taskId, pid: handle.pid, at })
      const status = yield* handle.exit
      return { pid: handle.pid, status, startedAt: at }
    }))

  const logExit = (slot: MutableSlot, pid: number, status: ExitStatus.ExitStatus, restart: boolean) => {
    const line = `child ${slot.taskId} (pid ${pid}) ${ExitStatus.describe(status)}${restart ? ", restarting" : ""}`
    const log = RestartPolicy.isNormal(policy, status) ? Effect.logInfo(line) : Effect.logWarning(line)
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
      const { pid, startedAt, status } = yield* incarnation(slot)
      const at = clock.currentTimeMillisUnsafe()
      const record = new ExitRecord({ taskId: slot.taskId, pid, status, at })
      exits.push(record)
      slot.pid = Option.none()
      slot.lastExit = Option.some(status)
      const restart = RestartPolicy.shouldRestart(policy, status)
      yield* logExit(slot, pid, status, restart)
      yield* publish({ _tag: "Exited", taskId: slot.taskId, pid, status, at, restart })
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
          exits: exits.filter((e) => RestartPolicy.shouldRestart(policy, e.status))
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
            slot.state = "stopped"
            slot.pid = Option.none()
          })
        )
      ), { concurrency: "unbounded", discard: true })),
    Effect.map((): Summary => ({ restarts, exits: exits.slice() }))
  )

  const status = Effect.sync((): ReadonlyArray<SlotStatus> => slots.map((s) => ({ ...s })))
  return { run, status } as const
})
