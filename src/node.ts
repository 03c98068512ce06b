/**
 * The Node.js implementation of the OS boundary: real processes.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as NodeProcessSpawner from "./node/NodeProcessSpawner.ts"

/** @since 0.1.0 */
export * as NodeClusterSpawner from "./node/NodeClusterSpawner.ts"

/** @since 0.1.0 */
export * as Prefork from "./node/Prefork.ts"

/** @since 0.1.0 */
export * as Health from "./node/Health.ts"
