/**
 * The messages a worker may send its primary over the IPC channel (`fork`
 * and cluster modes). The primary decodes each one with {@link decode};
 * anything else (garbage, unknown shapes, floods) is counted, logged and
 * dropped, never queued, so a misbehaving worker cannot crash the primary or
 * grow its memory.
 *
 * The one message is checked by hand rather than with `effect/Schema`: this
 * module is on the import path of every primary, and loading `Schema` costs a
 * process ~13 MiB and ~100 ms (docs/production.md).
 *
 * @since 0.1.0
 */

/**
 * "I am ready to serve": sent by `Worker.ready`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Ready {
  readonly type: "effect-prefork/ready"
}

/**
 * Every message a worker may send.
 *
 * @since 0.1.0
 * @category models
 */
export type WorkerMessage = Ready

/**
 * Is this a `Ready` message? Extra fields are allowed (and dropped by
 * {@link decode}), as a `Schema.Struct` would.
 *
 * @since 0.1.0
 * @category guards
 */
export const isReady = (u: unknown): u is Ready =>
  typeof u === "object" && u !== null && (u as { readonly type?: unknown }).type === "effect-prefork/ready"

/**
 * Decodes an IPC message: `undefined` when it is not a worker message.
 *
 * @since 0.1.0
 * @category decoding
 */
export const decode = (u: unknown): WorkerMessage | undefined =>
  isReady(u) ? { type: "effect-prefork/ready" } : undefined
