/**
 * The messages a worker and its primary exchange over the IPC channel
 * (`fork` and cluster modes). The primary decodes each message of a worker
 * with {@link decode}; anything else (garbage, unknown shapes, floods) is
 * counted, logged and dropped, never queued, so a misbehaving worker cannot
 * crash the primary or grow its memory.
 *
 * The messages are checked by hand rather than with `effect/Schema`: this
 * module is on the import path of every primary and worker, and loading
 * `Schema` costs a process ~13 MiB and ~100 ms (docs/production.md).
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
 * "My event loop is turning": sent every `PREFORK_HEARTBEAT_MS` milliseconds
 * by the preload the spawner gives a worker started with `heartbeat`, from a
 * timer on the worker's main event loop (so a blocked loop sends none).
 *
 * @since 0.1.0
 * @category models
 */
export interface Heartbeat {
  readonly type: "effect-prefork/heartbeat"
}

/**
 * "A server of mine listens on the supervisor's socket" (or on any address,
 * for a worker given none): sent once by the preload's HTTP drain, which
 * makes the worker ready when its readiness is `"listening"`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Listening {
  readonly type: "effect-prefork/listening"
}

/**
 * "I am draining, with this many HTTP connections (and HTTP/2 sessions)
 * still open": sent by the preload's HTTP drain when the number changes,
 * after SIGTERM, so that a kill at the stop timeout can say what it cut.
 *
 * @since 0.1.0
 * @category models
 */
export interface Draining {
  readonly type: "effect-prefork/draining"
  readonly connections: number
}

/**
 * Every message a worker may send.
 *
 * @since 0.1.0
 * @category models
 */
export type WorkerMessage = Ready | Heartbeat | Listening | Draining

/**
 * "You are task `taskId` now": sent by the primary to a spare
 * (`ProcessHandle.activate`); `Worker.taskId` waits for it in a spare.
 *
 * @since 0.1.0
 * @category models
 */
export interface Activate {
  readonly type: "effect-prefork/activate"
  readonly taskId: number
}

const typeOf = (u: unknown): unknown =>
  typeof u === "object" && u !== null ? (u as { readonly type?: unknown }).type : undefined

/**
 * Is this a `Ready` message? Extra fields are allowed (and dropped by
 * {@link decode}), as a `Schema.Struct` would.
 *
 * @since 0.1.0
 * @category guards
 */
export const isReady = (u: unknown): u is Ready => typeOf(u) === "effect-prefork/ready"

/**
 * Is this a `Heartbeat` message? Extra fields are allowed (and dropped by
 * {@link decode}).
 *
 * @since 0.1.0
 * @category guards
 */
export const isHeartbeat = (u: unknown): u is Heartbeat => typeOf(u) === "effect-prefork/heartbeat"

/**
 * Is this an `Activate` message with a task id (a non-negative integer)?
 *
 * @since 0.1.0
 * @category guards
 */
export const isActivate = (u: unknown): u is Activate => {
  if (typeOf(u) !== "effect-prefork/activate") return false
  const taskId = (u as { readonly taskId?: unknown }).taskId
  return typeof taskId === "number" && Number.isSafeInteger(taskId) && taskId >= 0
}

/**
 * Is this a `Draining` message with a count (a non-negative integer)?
 *
 * @since 0.1.0
 * @category guards
 */
export const isDraining = (u: unknown): u is Draining => {
  if (typeOf(u) !== "effect-prefork/draining") return false
  const connections = (u as { readonly connections?: unknown }).connections
  return typeof connections === "number" && Number.isSafeInteger(connections) && connections >= 0
}

const READY: Ready = { type: "effect-prefork/ready" }
const HEARTBEAT: Heartbeat = { type: "effect-prefork/heartbeat" }
const LISTENING: Listening = { type: "effect-prefork/listening" }

/**
 * Decodes a worker's IPC message: `undefined` when it is not a worker message.
 *
 * @since 0.1.0
 * @category decoding
 */
export const decode = (u: unknown): WorkerMessage | undefined =>
  isHeartbeat(u)
    ? HEARTBEAT
    : isReady(u)
      ? READY
      : typeOf(u) === "effect-prefork/listening"
        ? LISTENING
        : isDraining(u)
          ? { type: "effect-prefork/draining", connections: u.connections }
          : undefined
