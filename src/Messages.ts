/**
 * The messages a worker may send its primary over the IPC channel (`fork`
 * and cluster modes). The primary decodes each one with `Schema`; anything
 * else (garbage, unknown shapes, floods) is counted, logged and dropped,
 * never queued, so a misbehaving worker cannot crash the primary or grow its
 * memory.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"

/**
 * "I am ready to serve": sent by `Worker.ready`.
 *
 * @since 0.1.0
 * @category models
 */
export const Ready = Schema.Struct({ type: Schema.Literal("effect-prefork/ready") })

/**
 * @since 0.1.0
 * @category models
 */
export type Ready = typeof Ready.Type

/**
 * Every message a worker may send.
 *
 * @since 0.1.0
 * @category models
 */
export const WorkerMessage = Ready

/**
 * @since 0.1.0
 * @category models
 */
export type WorkerMessage = typeof WorkerMessage.Type

/**
 * Decodes an IPC message: `undefined` when it is not a worker message.
 *
 * @since 0.1.0
 * @category decoding
 */
export const decode: (u: unknown) => WorkerMessage | undefined = (() => {
  const option = Schema.decodeUnknownOption(WorkerMessage)
  return (u: unknown) => {
    const decoded = option(u)
    return decoded._tag === "Some" ? decoded.value : undefined
  }
})()
