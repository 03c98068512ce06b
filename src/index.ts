/**
 * effect-prefork: a pre-fork worker supervisor for Node.js, as an Effect 4
 * library. Start here: {@link Supervisor}.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as Errors from "./Errors.ts"

/** @since 0.1.0 */
export {
  BindFailed,
  ExitRecord,
  InvalidOptions,
  NotReady,
  Recycled,
  ReloadFailed,
  SpawnFailed,
  TooManyRestarts,
  Unresponsive
} from "./Errors.ts"
export type { ExitReason } from "./Errors.ts"

/** @since 0.1.0 */
export * as ExitStatus from "./ExitStatus.ts"

/** @since 0.1.0 */
export * as Metrics from "./Metrics.ts"

/** @since 0.1.0 */
export * as ProcessSpawner from "./ProcessSpawner.ts"

/** @since 0.1.0 */
export * as RestartPolicy from "./RestartPolicy.ts"

/** @since 0.1.0 */
export * as Supervisor from "./Supervisor.ts"

/** @since 0.1.0 */
export * as TaskId from "./TaskId.ts"

/** @since 0.1.0 */
export * as Worker from "./Worker.ts"
