/**
 * The worker side: what a process started by a supervisor can ask about
 * itself. Tornado's `task_id()` is {@link taskId}.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as Messages from "./Messages.ts"
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

/**
 * Tells the primary this worker is ready to serve (the readiness handshake
 * for `ready: "message"` or `"listening"`): sends the `Worker.ready` IPC
 * message. Outside a worker with an IPC channel it does nothing.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Worker } from "effect-prefork"
 *
 * const main = Effect.gen(function*() {
 *   // ... open connections, warm caches ...
 *   yield* Worker.ready
 * })
 * ```
 *
 * @since 0.1.0
 * @category readiness
 */
export const ready: Effect.Effect<void> = Effect.callback<void>((resume) => {
  if (process.send === undefined || !process.connected) return resume(Effect.void)
  const message: Messages.Ready = { type: "effect-prefork/ready" }
  process.send(message, undefined, {}, () => resume(Effect.void))
})

/**
 * A listening socket this worker was handed by its supervisor (or by
 * systemd): its descriptor and its name.
 *
 * @since 0.1.0
 * @category models
 */
export interface InheritedSocket {
  readonly fd: number
  readonly name: string
}

/**
 * Reads the sockets of systemd's socket-activation protocol from an
 * environment: `LISTEN_FDS` descriptors from 3 on, named by `LISTEN_FDNAMES`,
 * when `LISTEN_PID` is `pid`. Empty otherwise.
 *
 * @since 0.1.0
 * @category utils
 */
export const socketsFromEnv = (
  env: Readonly<Record<string, string | undefined>>,
  pid: number
): ReadonlyArray<InheritedSocket> => {
  const count = env["LISTEN_FDS"]
  if (count === undefined || !/^\d+$/.test(count) || env["LISTEN_PID"] !== String(pid)) return []
  const names = (env["LISTEN_FDNAMES"] ?? "").split(":")
  return Array.from({ length: Number(count) }, (_, i) => ({ fd: 3 + i, name: names[i] || `fd:${3 + i}` }))
}

/**
 * The listening sockets the supervisor hands this worker (its `listen`
 * option), in order: serve them with `server.listen({ fd })`. Empty outside
 * a worker, or for a supervisor without `listen`.
 *
 * @example
 * ```ts
 * import { createServer } from "node:http"
 * import { Effect } from "effect"
 * import { Worker } from "effect-prefork"
 *
 * const serve = Effect.gen(function*() {
 *   const [socket] = yield* Worker.sockets
 *   if (socket === undefined) return yield* Effect.die("started without --listen")
 *   createServer((_, res) => res.end("hello\n")).listen({ fd: socket.fd })
 *   yield* Worker.ready
 * })
 * ```
 *
 * @since 0.1.0
 * @category accessors
 */
export const sockets: Effect.Effect<ReadonlyArray<InheritedSocket>> = Effect.sync(() =>
  socketsFromEnv(process.env, process.pid)
)
