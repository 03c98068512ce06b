/**
 * The worker side: what a process started by a supervisor can ask about
 * itself. Tornado's `task_id()` is {@link taskId}.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Messages from "./Messages.ts"
import { ENV_VAR, TaskId } from "./TaskId.ts"

/**
 * The environment variable a spare is started with (`PREFORK_SPARE=1`),
 * instead of `PREFORK_TASK_ID`: it waits to be given a task id. It is
 * removed, and `PREFORK_TASK_ID` set, when the task id arrives.
 *
 * @since 0.1.0
 * @category constants
 */
export const SPARE_ENV_VAR = "PREFORK_SPARE"

/**
 * The `Symbol.for` key under which a spare's activation is published: a
 * promise of its task id (`undefined` if its channel closed first). The
 * preload the spawner gives a spare creates it before the worker's own code
 * runs; {@link activated} creates it where there is none.
 *
 * @since 0.1.0
 * @category constants
 */
export const ACTIVATION_KEY = "effect-prefork/activation"

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

const isSpare = (): boolean => process.env[SPARE_ENV_VAR] === "1"

/**
 * Waits for the primary's `Activate` message, as the preload does (for a
 * spare started without it): sets `PREFORK_TASK_ID`, and removes its
 * listeners at once, since they keep the IPC channel, and so the process,
 * alive. Node queues the messages that arrive while a process has no
 * `'message'` listener, so an activation sent earlier is not lost.
 */
const listenForActivation = (): Promise<TaskId | undefined> =>
  new Promise((resolve) => {
    if (process.send === undefined || !process.connected) return resolve(undefined)
    const done = (id: TaskId | undefined) => {
      process.off("message", onMessage)
      process.off("disconnect", onDisconnect)
      resolve(id)
    }
    const onMessage = (message: unknown) => {
      if (!Messages.isActivate(message)) return
      process.env[ENV_VAR] = String(message.taskId)
      delete process.env[SPARE_ENV_VAR]
      done(TaskId(message.taskId))
    }
    const onDisconnect = () => done(undefined)
    process.on("message", onMessage)
    process.on("disconnect", onDisconnect)
  })

/**
 * This process's task id, for code outside Effect: resolves at once in a
 * worker started with its task id, when the primary gives it one in a spare
 * (then `process.env.PREFORK_TASK_ID` is set too), and with `undefined`
 * outside a worker, or in a spare whose primary went away first.
 *
 * A spare is a worker started ahead of need, with `PREFORK_SPARE=1` and no
 * `PREFORK_TASK_ID`: it loads its code and warms up, then waits here; the
 * supervisor activates it in place of a worker that exited, which saves the
 * replacement its start-up time. Read the task id (or anything that depends
 * on it) only after this resolves.
 *
 * @example
 * ```ts
 * import { createServer } from "node:http"
 * import { Worker } from "effect-prefork"
 *
 * const server = createServer((_, res) => res.end(`task ${process.env.PREFORK_TASK_ID}\n`))
 * // ... load what takes time, before knowing which task this is ...
 * const id = await Worker.activated()
 * server.listen(8000 + (id ?? 0), "127.0.0.1")
 * ```
 *
 * @since 0.1.0
 * @category accessors
 */
export const activated = (): Promise<TaskId | undefined> => {
  if (!isSpare()) return Promise.resolve(Option.getOrUndefined(taskIdFromEnv(process.env)))
  const slots = globalThis as { [key: symbol]: Promise<TaskId | undefined> | undefined }
  const key = Symbol.for(ACTIVATION_KEY)
  return (slots[key] ??= listenForActivation())
}

/**
 * This process's task id (Tornado's `task_id()`): `Option.some(id)` in a worker
 * started by a supervisor, `Option.none()` anywhere else. It is read from the
 * `PREFORK_TASK_ID` environment variable, so any program can read it too. In
 * a spare (`PREFORK_SPARE=1`) it waits until the primary gives the worker its
 * task id (see {@link activated}).
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
export const taskId: Effect.Effect<Option.Option<TaskId>> = Effect.suspend(() =>
  isSpare()
    ? Effect.map(
        Effect.promise(() => activated()),
        Option.fromUndefinedOr
      )
    : Effect.sync(() => taskIdFromEnv(process.env))
)

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
