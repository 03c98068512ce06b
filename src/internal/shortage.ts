/**
 * A spawn that failed for want of a resource is tried again. Too many open
 * files (`EMFILE`, `ENFILE`), too many processes (`EAGAIN`), not enough
 * memory (`ENOMEM`): such a failure says nothing about the worker, and may
 * pass a moment later (see `Errors.isShortage`). As systemd does with
 * `RestartSec=`, the spawn is tried again after a delay that grows — 100 ms,
 * doubling, at most 5 s — for as long as the shortage lasts, while the other
 * workers keep running; no restart budget is spent. Each retry is told: a
 * `SpawnRetrying` event, a warning that names what ran short, and the
 * `prefork.worker.spawn.retries` counter. Any other failure (`ENOENT`,
 * `EACCES`, …) is returned at once, as it is.
 *
 * The wait is interruptible even where the spawn is not (a slot's acquire is
 * uninterruptible): closing the supervisor during a wait ends it at once, and
 * nothing more is spawned.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import type { SpawnFailed } from "../Errors.ts"
import * as Metrics from "../Metrics.ts"
import type { Event } from "../Model.ts"
import type { TaskId } from "../TaskId.ts"

/** The first delay before a spawn is tried again, in milliseconds. */
export const FIRST_DELAY_MILLIS = 100

/** The longest delay between two tries of a spawn, in milliseconds. */
export const MAX_DELAY_MILLIS = 5000

/**
 * The delay before the next try after `attempt` failed tries: 100 ms, 200 ms,
 * 400 ms … at most 5 s.
 *
 * @internal
 */
export const delay = (attempt: number): Duration.Duration =>
  Duration.millis(Math.min(MAX_DELAY_MILLIS, FIRST_DELAY_MILLIS * 2 ** Math.min(Math.max(attempt, 1) - 1, 16)))

/** Whose spawn is retried: a slot's, or a warm spare's. @internal */
export type Whose = { readonly taskId: TaskId } | { readonly spare: true }

/**
 * Runs `spawn` until it succeeds or fails with anything but a shortage,
 * waiting between tries and telling each retry.
 *
 * @internal
 */
export const retrying = <A, R>(
  spawn: Effect.Effect<A, SpawnFailed, R>,
  options: {
    readonly whose: Whose
    readonly publish: (event: Event) => Effect.Effect<unknown>
    readonly now: () => number
  }
): Effect.Effect<A, SpawnFailed, R> =>
  Effect.gen(function* () {
    const { now, publish, whose } = options
    const annotations = "taskId" in whose ? { taskId: whose.taskId } : { spare: true }
    for (let attempt = 1; ; attempt++) {
      const result = yield* Effect.result(spawn)
      if (Result.isSuccess(result)) return result.success
      const error = result.failure
      if (!error.transient || error.code === undefined) return yield* Effect.fail(error)
      const wait = delay(attempt)
      yield* Metrics.recordSpawnRetry(error.code)
      yield* publish({
        _tag: "SpawnRetrying",
        ...whose,
        code: error.code,
        message: error.message,
        attempt,
        delay: wait,
        at: now()
      })
      yield* Effect.logWarning(`${error.message}; retrying in ${Duration.format(wait)} (attempt ${attempt})`).pipe(
        Effect.annotateLogs({ ...annotations, code: error.code, attempt, delayMillis: Duration.toMillis(wait) })
      )
      yield* Effect.interruptible(Effect.sleep(wait))
    }
  })
