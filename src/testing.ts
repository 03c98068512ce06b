/**
 * An in-memory process spawner whose processes a test starts, ends and
 * inspects at will: deterministic supervision tests under `TestClock`.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as TestSpawner from "./testing/TestSpawner.ts"
