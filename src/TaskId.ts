/**
 * A worker's task id: the stable slot number `0 … n-1` that Tornado's
 * `task_id()` returns. A restarted worker gets the id of the one it replaces,
 * so ids name slots, never incarnations (unlike cluster's `worker.id`).
 *
 * @since 0.1.0
 */
import type * as Brand from "effect/Brand"
import * as Context from "effect/Context"
import * as Option from "effect/Option"

/**
 * @since 0.1.0
 * @category models
 */
export type TaskId = Brand.Branded<number, "TaskId">

/**
 * Makes task ids: `TaskId(3)` checks that the value is a non-negative integer
 * and throws if it is not; `TaskId.option(n)` and `TaskId.is(n)` ask instead.
 *
 * (Written by hand rather than with `Brand.check` and `Schema` checks: this
 * module is on the import path of every worker, and `effect/Brand` loads
 * Schema's AST.)
 *
 * @since 0.1.0
 * @category models
 */
export interface Constructor {
  (n: number): TaskId
  /** `Option.some(n)` as a `TaskId` when it is one, `Option.none()` otherwise. */
  readonly option: (n: number) => Option.Option<TaskId>
  /** Is `n` a task id (a non-negative integer)? */
  readonly is: (n: number) => n is TaskId
}

const isTaskId = (n: number): n is TaskId => Number.isInteger(n) && n >= 0

/**
 * Checks that the value is a non-negative integer.
 *
 * @since 0.1.0
 * @category constructors
 */
export const TaskId: Constructor = Object.assign(
  (n: number): TaskId => {
    if (!isTaskId(n)) throw new RangeError(`a task id is a non-negative integer, got ${n}`)
    return n
  },
  { option: (n: number) => (isTaskId(n) ? Option.some(n) : Option.none()), is: isTaskId }
)

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
