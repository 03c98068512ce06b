/**
 * A surge: a replacement started beside a slot's live worker, which takes
 * the slot over once it is ready, while the old worker is stopped
 * gracefully. Used by reloads and by recycles where the sockets are shared.
 * A replacement from its spawn until it takes over or is abandoned is
 * `pending` here, so that a slot that ends meanwhile stops it too.
 */
import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberSet from "effect/FiberSet"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import { ReloadFailed, type SpawnFailed } from "../Errors.ts"
import type * as ExitStatus from "../ExitStatus.ts"
import type { Config, Event } from "../Model.ts"
import type { ProcessHandle } from "../ProcessSpawner.ts"
import type { TaskId } from "../TaskId.ts"
import type * as Slot from "./slot.ts"

/** A worker spawned into a scope of its own. @internal */
export interface Acquired {
  readonly scope: Scope.Closeable
  readonly handle: ProcessHandle
}

/**
 * How a surge ended: the replacement took over (the old worker stopped with
 * `status`), or it failed and the caller gets `error`; `status` is then the
 * old worker's when it was stopped anyway (the replacement died while the
 * old one was stopping: the slot starts a fresh worker).
 *
 * @internal
 */
export type Outcome =
  | { readonly _tag: "TookOver"; readonly status: ExitStatus.ExitStatus; readonly next: Acquired }
  | {
      readonly _tag: "Failed"
      readonly status: Option.Option<ExitStatus.ExitStatus>
      readonly error: ReloadFailed
    }

/** @internal */
export interface Surges {
  readonly surge: (taskId: TaskId, old: ProcessHandle, spares: boolean) => Effect.Effect<Outcome>
  /** The replacement of a slot between its spawn and its takeover, if any. */
  readonly pending: (taskId: TaskId) => Acquired | undefined
  /** A slot took its replacement over: it is no longer pending. */
  readonly tookOver: (taskId: TaskId) => void
  /** Stops a pending replacement (and tells it) now. */
  readonly abandonNow: (taskId: TaskId, next: Acquired) => Effect.Effect<void>
}

/**
 * Surges for the slots of one supervisor: `spawn` starts a worker (a spare
 * when allowed) with a transition for the slot's state, `ready` waits for a
 * worker's readiness, replacements that will not take over are stopped in
 * `reapers`.
 *
 * @internal
 */
export const make = (options: {
  readonly cfg: Config
  readonly spawn: (
    taskId: TaskId,
    transition: (pid: number) => Slot.Transition,
    spares: boolean
  ) => Effect.Effect<Acquired, SpawnFailed>
  readonly ready: (handle: ProcessHandle) => Effect.Effect<void>
  readonly apply: (taskId: TaskId, t: Slot.Transition) => Effect.Effect<void>
  readonly publish: (event: Event) => Effect.Effect<unknown>
  readonly now: () => number
  readonly reapers: FiberSet.FiberSet<void>
}): Surges => {
  const { apply, cfg, now, publish, ready, reapers, spawn } = options
  /** Replacements of a surge, from their spawn until they take over or are abandoned. */
  const pendings = new Map<number, Acquired>()

  /**
   * A surge: start a replacement beside the live worker, and once it is ready
   * stop the old one; the replacement is then the slot's next incarnation. If
   * the replacement cannot be started (a shortage too: it is not retried, the
   * old worker serves on), exits or is not ready in time, it is stopped, the
   * old worker keeps serving and the caller gets `ReloadFailed`; no budget is spent.
   */
  const surge = (taskId: TaskId, old: ProcessHandle, spares: boolean): Effect.Effect<Outcome> =>
    Effect.gen(function* () {
      const spawned = yield* Effect.exit(
        spawn(taskId, (pid) => ({ _tag: "Surging", pid }), spares).pipe(
          Effect.tap((next) => Effect.sync(() => pendings.set(taskId, next))),
          Effect.uninterruptible
        )
      )
      if (Exit.isFailure(spawned)) {
        const reason = Cause.squash(spawned.cause)
        return {
          _tag: "Failed",
          status: Option.none(),
          error: new ReloadFailed({
            taskId,
            reloaded: [],
            message: `reload: cannot start a replacement for child ${taskId}: ${reason instanceof Error ? reason.message : String(reason)}`
          })
        }
      }
      const next = spawned.value
      // Interrupted from here on, the replacement is stopped beside the old worker, not after it.
      const outcome = yield* Effect.raceAll([
        Effect.as(ready(next.handle), "ready" as const),
        Effect.as(next.handle.exit, "exited" as const),
        Effect.as(old.exit, "old-exited" as const)
      ]).pipe(
        Effect.timeoutOption(cfg.readyTimeout),
        Effect.onInterrupt(() => abandon(taskId, next))
      )
      if (Option.isSome(outcome) && outcome.value === "ready") {
        yield* publish({ _tag: "Ready", taskId, pid: next.handle.pid, at: now() })
        // The old worker stops (gracefully: it may take the stop timeout) while the replacement waits to take over.
        const first = yield* Effect.raceFirst(
          Effect.as(old.stop, "old-stopped" as const),
          Effect.as(next.handle.exit, "next-exited" as const)
        ).pipe(Effect.onInterrupt(() => abandon(taskId, next)))
        if (first === "next-exited") {
          // The replacement died before it could take over: it never served as the slot's worker. The slot
          // starts a fresh worker (a requested restart, no budget), and the reload is told it failed.
          yield* Effect.logWarning(
            `reload: the replacement for child ${taskId} (pid ${next.handle.pid}) exited while pid ${old.pid} was stopping; starting another`
          ).pipe(Effect.annotateLogs({ taskId, pid: next.handle.pid }))
          yield* Effect.uninterruptible(abandonNow(taskId, next))
          const status = yield* old.stop
          return {
            _tag: "Failed",
            status: Option.some(status),
            error: new ReloadFailed({
              taskId,
              pid: next.handle.pid,
              reloaded: [],
              message: `reload: the replacement for child ${taskId} (pid ${next.handle.pid}) exited before it took over`
            })
          }
        }
        const status = yield* old.stop
        return { _tag: "TookOver", status, next }
      }
      const why = Option.isNone(outcome)
        ? `not ready within ${Duration.toMillis(cfg.readyTimeout)} ms`
        : outcome.value === "exited"
          ? "exited before it was ready"
          : `was not ready when child ${taskId} (pid ${old.pid}) exited`
      yield* Effect.logWarning(
        `reload: the replacement for child ${taskId} (pid ${next.handle.pid}) ${why}; child ${taskId} (pid ${old.pid}) keeps serving`
      ).pipe(Effect.annotateLogs({ taskId, pid: next.handle.pid }))
      yield* Effect.uninterruptible(abandonNow(taskId, next))
      return {
        _tag: "Failed",
        status: Option.none(),
        error: new ReloadFailed({
          taskId,
          pid: next.handle.pid,
          reloaded: [],
          message: `reload: the replacement for child ${taskId} (pid ${next.handle.pid}) ${why}`
        })
      }
    })

  /** A replacement that will not take over: stopped (and told) in the background, as a reaper. */
  const abandon = (taskId: TaskId, next: Acquired) =>
    Effect.suspend(() =>
      pendings.get(taskId) === next ? Effect.asVoid(FiberSet.run(reapers, abandonNow(taskId, next))) : Effect.void
    )
  const abandonNow = (taskId: TaskId, next: Acquired) =>
    Effect.uninterruptible(
      Effect.sync(() => {
        if (pendings.get(taskId) === next) pendings.delete(taskId)
      })
    ).pipe(Effect.andThen(abandoned(taskId, next)))
  const abandoned = (taskId: TaskId, next: Acquired) =>
    Effect.uninterruptible(
      Scope.close(next.scope, Exit.void).pipe(
        Effect.andThen(next.handle.exitStatus),
        Effect.flatMap((status) =>
          apply(taskId, { _tag: "SurgeFailed" }).pipe(
            Effect.andThen(
              Option.isNone(status)
                ? Effect.void
                : publish({
                    _tag: "Exited",
                    taskId,
                    pid: next.handle.pid,
                    status: status.value,
                    at: now(),
                    restart: false,
                    notReady: Option.none(),
                    requested: true,
                    stopped: true
                  })
            )
          )
        )
      )
    )

  return {
    surge,
    pending: (taskId) => pendings.get(taskId),
    tookOver: (taskId) => {
      pendings.delete(taskId)
    },
    abandonNow
  }
}
