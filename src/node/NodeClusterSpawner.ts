/**
 * Cluster-mode workers: the Tornado pattern for servers. The primary forks
 * `node:cluster` workers of a script (by default the running one), and a
 * server those workers start listening shares one port across all of them.
 *
 * - Exits come from the worker's `'exit'` event, never `'disconnect'`: a
 *   worker that died while a connection was being handed to it may never
 *   disconnect (throng 5 missed such restarts), but it always exits.
 * - A worker is ready when it starts listening or sends `Worker.ready`.
 * - A cluster worker exits by itself when its IPC channel to the primary
 *   closes, so it does not outlive a primary that was SIGKILLed.
 * - Cluster workers share the primary's process group (Node gives no way to
 *   detach them), so signals are sent to the worker's pid alone.
 *
 * @since 0.1.0
 */
import cluster from "node:cluster"
import * as Effect from "effect/Effect"
import type { SpawnFailed } from "../Errors.ts"
import type { ProcessHandle, SpawnRequest } from "../ProcessSpawner.ts"
import type * as Scope from "effect/Scope"
import { attach, errorCode, failed, release, type Started } from "./internal/child.ts"

/**
 * The cluster half of the Node spawner.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = () => {
  const start = (request: SpawnRequest): Effect.Effect<Started, SpawnFailed> =>
    Effect.suspend(() => {
      if (!cluster.isPrimary) {
        return Effect.fail(failed(request, undefined, "cluster workers can only be started from the cluster primary"))
      }
      const out = request.stdio
      cluster.setupPrimary({
        exec: request.command,
        args: [...request.args],
        execArgv: [...(request.execArgv ?? process.execArgv)],
        ...(request.cwd === undefined ? {} : { cwd: request.cwd }),
        silent: out !== "inherit",
        stdio: ["ignore", out, out, "ipc"]
      })
      let worker: ReturnType<typeof cluster.fork>
      try {
        worker = cluster.fork({ ...request.env })
      } catch (error) {
        return Effect.fail(failed(request, errorCode(error), String(error)))
      }
      return attach(request, worker.process, {
        onListening: (notify) => worker.once("listening", notify),
        kill: (_pid, signal) => worker.process.kill(signal)
      })
    })

  return {
    spawn: (request: SpawnRequest): Effect.Effect<ProcessHandle, SpawnFailed, Scope.Scope> =>
      Effect.acquireRelease(start(request), release(request)).pipe(Effect.map(({ handle }) => handle))
  }
}
