/**
 * The log lines of a rolling reload and of a one-worker restart, however they
 * were asked for (SIGHUP, `prefork ctl reload`, `prefork ctl restart`, a
 * `--watch` change), the way gunicorn's arbiter logs a HUP: one line when it
 * starts (why, and how many workers), one when it ends (how long it took, or
 * how it failed and what was done by then). Durations are read on the
 * monotonic clock.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type { InvalidOptions, ReloadFailed } from "../Errors.ts"
import { monotonicMillis } from "../ProcessSpawner.ts"
import type { ReloadOptions, SupervisorHandle } from "../Supervisor.ts"
import type { TaskId } from "../TaskId.ts"

const monotonic: Effect.Effect<number> = Effect.clockWith((clock) => Effect.sync(() => monotonicMillis(clock)))

/** `450 ms`, `1.2 s`. */
const took = (millis: number): string =>
  millis < 1000 ? `${Math.round(millis)} ms` : `${(Math.round(millis / 100) / 10).toFixed(1)} s`

const processes = (n: number): string => `${n} process${n === 1 ? "" : "es"}`

/**
 * A rolling reload of every worker (`SupervisorHandle.reload`), logged as it
 * starts (`<why>: reloading 4 processes one at a time`) and as it ends
 * (`Reload finished: 4 processes replaced in 1.2 s`, or a warning
 * `Reload stopped after 800 ms: <why> (2 of 4 processes replaced; the others
 * keep their workers)`). Fails as the reload does, once logged.
 *
 * @since 0.1.0
 * @category logging
 */
export const reload = (
  handle: SupervisorHandle,
  why: string,
  options?: ReloadOptions
): Effect.Effect<void, ReloadFailed | InvalidOptions> =>
  Effect.gen(function* () {
    const count = handle.processes
    yield* Effect.logInfo(`${why}: reloading ${processes(count)} one at a time`)
    const start = yield* monotonic
    const elapsed = Effect.map(monotonic, (now) => took(now - start))
    return yield* handle.reload(options).pipe(
      Effect.tap(() =>
        Effect.flatMap(elapsed, (t) => Effect.logInfo(`Reload finished: ${processes(count)} replaced in ${t}`))
      ),
      Effect.tapError((error) =>
        Effect.flatMap(elapsed, (t) =>
          Effect.logWarning(
            `Reload stopped after ${t}: ${error.message}${
              error._tag === "ReloadFailed"
                ? ` (${error.reloaded.length} of ${processes(count)} replaced; the others keep their workers)`
                : ""
            }`
          )
        )
      )
    )
  })

/**
 * A restart of one worker (`SupervisorHandle.restart`), logged as it starts
 * (`<why>: restarting child 1 (pid 123)`) and as it ends (`Restart of child 1
 * finished in 300 ms: pid 456`, or `…: the slot has no worker` when it ended
 * meanwhile).
 *
 * @since 0.1.0
 * @category logging
 */
export const restart = (handle: SupervisorHandle, taskId: TaskId, why: string): Effect.Effect<void> =>
  Effect.gen(function* () {
    const pidOf = Effect.map(handle.status, (slots) =>
      Option.flatMap(Option.fromNullishOr(slots.find((s) => s.taskId === taskId)), (s) => s.pid)
    )
    const before = yield* pidOf
    yield* Effect.logInfo(
      `${why}: restarting child ${taskId}${Option.match(before, { onNone: () => "", onSome: (pid) => ` (pid ${pid})` })}`
    )
    const start = yield* monotonic
    yield* handle.restart(taskId)
    const t = took((yield* monotonic) - start)
    const after = yield* pidOf
    yield* Effect.logInfo(
      `Restart of child ${taskId} finished in ${t}: ${Option.match(after, { onNone: () => "the slot has no worker", onSome: (pid) => `pid ${pid}` })}`
    )
  })

/**
 * The same handle, whose `reload` and `restart` are logged as {@link reload}
 * and {@link restart} log them, naming `source` as the one who asked (for the
 * control socket: `prefork ctl`). Everything else is the handle's own.
 *
 * @since 0.1.0
 * @category logging
 */
export const logged = (handle: SupervisorHandle, source: string): SupervisorHandle =>
  Object.create(handle, {
    reload: { value: (options?: ReloadOptions) => reload(handle, `${source} reload`, options) },
    restart: { value: (taskId: TaskId) => restart(handle, taskId, `${source} restart ${taskId}`) }
  }) as SupervisorHandle
