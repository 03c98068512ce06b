/**
 * The worker side: what a process started by a supervisor can ask about
 * itself. Tornado's `task_id()` is {@link taskId}.
 *
 * @since 0.1.0
 */
import { Effect, Option } from "effect"
import { ENV_VAR, TaskId } from "./TaskId.ts"

/**
 * Reads a task id from an environment: `Option.none()` when the variable is
 * absent or is not a non-negative integer.
 *
 * @since 0.1.0
 * @category utils
 */
export const taskIdFromEnv = (env: Readonly<Record<string, string | undefined>>): Option.Option<TaskId> => {
  const raw = env[ENV_VAR]
  if (raw === undefined || !/^\d+$/.test(raw)) return Option.none()
  return TaskId.option(Number(raw))
}

/**
 * This process's task id (Tornado's `task_id()`): `Option.some(id)` in a worker
 * started by a supervisor, `Option.none()` anywhere else. It is read from the
 * `PREFORK_TASK_ID` environment variable, so any program can read it too.
 *
 * @example
 * ```ts
 * import { Effect, Option } from "effect"
 * import { Worker } from "effect-prefork"
 *
 * const program = Effect.gen(function*() {
 *   const id = yield* Worker.taskId
 *   yield* Effect.log(Option.isSome(id) ? `worker ${id.value}` : "not a worker")
 * })
 * ```
 *
 * @since 0.1.0
 * @category accessors
 */
export const taskId: Effect.Effect<Option.Option<TaskId>> = Effect.sync(() => taskIdFromEnv(process.env))
