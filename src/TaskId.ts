/**
 * A worker's task id: the stable slot number `0 … n-1` that Tornado's
 * `task_id()` returns. A restarted worker gets the id of the one it replaces,
 * so ids name slots, never incarnations (unlike cluster's `worker.id`).
 *
 * @since 0.1.0
 */
import * as Brand from "effect/Brand"
import * as Context from "effect/Context"
import * as Schema from "effect/Schema"

/**
 * @since 0.1.0
 * @category models
 */
export type TaskId = Brand.Branded<number, "TaskId">

/**
 * Checks that the value is a non-negative integer.
 *
 * @since 0.1.0
 * @category constructors
 */
export const TaskId: Brand.Constructor<TaskId> = Brand.check<TaskId>(Schema.isInt(), Schema.isGreaterThanOrEqualTo(0))

/**
 * The environment variable through which every worker, in any language,
 * learns its task id: `PREFORK_TASK_ID=3`.
 *
 * @since 0.1.0
 * @category constants
 */
export const ENV_VAR = "PREFORK_TASK_ID"

/**
 * The task id of the current worker, as a service: a worker program run by
 * `Prefork.run` can require it.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { TaskId } from "effect-prefork"
 *
 * const program = Effect.gen(function*() {
 *   const id = yield* TaskId.Current
 *   yield* Effect.log(`I am task ${id}`)
 * })
 * ```
 *
 * @since 0.1.0
 * @category services
 */
export class Current extends Context.Service<Current, TaskId>()("effect-prefork/TaskId/Current") {}
