/**
 * Warm spares: workers booted ahead of need, without a task id, each in a
 * scope of its own. A fiber keeps `target` of them; a slot takes the oldest
 * (it is then the slot's worker, its scope the incarnation's); a spare that
 * dies before it is taken is told and backs the next one off; `drain` stops
 * them all (a reload refreshes them, the supervision ending ends them).
 */
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberSet from "effect/FiberSet"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as SubscriptionRef from "effect/SubscriptionRef"
import type { SpawnFailed } from "../Errors.ts"
import * as ExitStatus from "../ExitStatus.ts"
import type { Event } from "../Model.ts"
import type { ProcessHandle } from "../ProcessSpawner.ts"

/** A spare that has booted, waiting for a task id. @internal */
export interface Spare {
  readonly scope: Scope.Closeable
  readonly handle: ProcessHandle
  /** Completed when it leaves the pool (taken, or stopped): its watch ends. */
  readonly activated: Deferred.Deferred<void>
}

/** @internal */
export interface Pool {
  /** The oldest live spare, out of the pool: the caller's now. */
  readonly take: Effect.Effect<Spare | undefined>
  /** Keeps `target` spares booted, until interrupted. */
  readonly keep: Effect.Effect<never>
  /** Stops every spare in the pool, and waits. */
  readonly drain: Effect.Effect<void>
  /** The spares booted now, oldest first. */
  readonly spares: SubscriptionRef.SubscriptionRef<ReadonlyArray<Spare>>
}

/** The delay before the next spare after `failures` spares died before they were taken: 100 ms doubling, at most 30 s. */
const backoff = (failures: number): Duration.Duration =>
  Duration.millis(Math.min(30_000, 100 * 2 ** Math.min(failures - 1, 10)))

/**
 * A pool of `target` spares, started with `spawn` into the scope it is given.
 * The watches of the spares and the fiber that keeps them run in `fibers`:
 * clear it, then `drain`, to end the pool.
 *
 * @internal
 */
export const make = (options: {
  readonly target: number
  readonly spawn: Effect.Effect<ProcessHandle, SpawnFailed, Scope.Scope>
  readonly fibers: FiberSet.FiberSet<void>
  readonly publish: (event: Event) => Effect.Effect<unknown>
  readonly now: () => number
}): Effect.Effect<Pool> =>
  Effect.gen(function* () {
    const { fibers, now, publish, target } = options
    const spares = yield* SubscriptionRef.make<ReadonlyArray<Spare>>([])
    /** Spares that died before they were taken, since the last one was taken: the backoff before the next. */
    let failures = 0

    /** A spare that left the pool without a task id: its group stopped, and told. */
    const gone = (spare: Spare, stopped: boolean) =>
      Effect.uninterruptible(
        Scope.close(spare.scope, Exit.void).pipe(
          Effect.andThen(spare.handle.exitStatus),
          Effect.flatMap((status) =>
            Option.isNone(status)
              ? Effect.void
              : (stopped
                  ? Effect.logDebug(`spare pid ${spare.handle.pid} stopped`)
                  : Effect.logWarning(
                      `spare pid ${spare.handle.pid} ${ExitStatus.describe(status.value)} before it was given a task id`
                    )
                ).pipe(
                  Effect.annotateLogs({ pid: spare.handle.pid }),
                  Effect.andThen(
                    publish({ _tag: "SpareExited", pid: spare.handle.pid, status: status.value, at: now(), stopped })
                  )
                )
          )
        )
      )

    const take: Effect.Effect<Spare | undefined> = Effect.gen(function* () {
      while (true) {
        const spare = yield* SubscriptionRef.modify(spares, (p): readonly [Spare | undefined, ReadonlyArray<Spare>] =>
          p.length === 0 ? [undefined, p] : [p[0], p.slice(1)]
        )
        if (spare === undefined) return undefined
        yield* Deferred.succeed(spare.activated, void 0)
        if (Option.isNone(yield* spare.handle.exitStatus)) {
          failures = 0
          return spare
        }
        yield* gone(spare, false)
      }
    })

    /** Watches a spare until it is taken or stopped; if it dies first, it leaves the pool and counts as a failure. */
    const watch = (spare: Spare) =>
      Effect.raceFirst(Effect.as(spare.handle.exit, true), Effect.as(Deferred.await(spare.activated), false)).pipe(
        Effect.flatMap((died) =>
          Effect.suspend(() => {
            if (!died || !SubscriptionRef.getUnsafe(spares).includes(spare)) return Effect.void
            // Counted before the pool shrinks: the fiber keeping the spares backs off at once.
            failures++
            return SubscriptionRef.update(spares, (p) => p.filter((s) => s !== spare)).pipe(
              Effect.andThen(gone(spare, false))
            )
          })
        )
      )

    /** Boots one spare into the pool and starts its watch: one uninterruptible step. */
    const boot = Effect.uninterruptible(
      Effect.gen(function* () {
        const scope = yield* Scope.make()
        const spawned = yield* Effect.exit(Scope.provide(options.spawn, scope))
        if (Exit.isFailure(spawned)) {
          yield* Scope.close(scope, spawned)
          return yield* Effect.failCause(spawned.cause)
        }
        const spare: Spare = { scope, handle: spawned.value, activated: Deferred.makeUnsafe() }
        yield* SubscriptionRef.update(spares, (p) => [...p, spare])
        yield* publish({ _tag: "SpareStarted", pid: spare.handle.pid, at: now() })
        yield* FiberSet.run(fibers, Effect.interruptible(watch(spare)))
      })
    )

    const keep: Effect.Effect<never> = Effect.forever(
      Effect.gen(function* () {
        yield* SubscriptionRef.changes(spares).pipe(
          Stream.filter((p) => p.length < target),
          Stream.runHead
        )
        if (failures > 0) yield* Effect.sleep(backoff(failures))
        const booted = yield* Effect.exit(boot)
        if (Exit.isFailure(booted)) {
          failures++
          yield* Effect.logWarning(`cannot start a spare: ${Cause.pretty(booted.cause)}`)
        }
      })
    )

    const drain = Effect.flatMap(SubscriptionRef.getAndSet(spares, []), (old) =>
      Effect.forEach(old, (spare) => Effect.andThen(Deferred.succeed(spare.activated, void 0), gone(spare, true)), {
        concurrency: "unbounded",
        discard: true
      })
    )

    return { take, keep, drain, spares }
  })
