/**
 * Cluster-mode workers: the Tornado pattern for servers. The primary forks
 * `node:cluster` workers of a script (by default the running one), and a
 * server those workers start listening shares one port across all of them.
 *
 * - Exits come from the worker's `'exit'` event, never `'disconnect'`: a
 *   worker that died while a connection was being handed to it may never
 *   disconnect (throng 5 missed such restarts), but it always exits.
 * - A worker is ready when it starts listening or sends `Worker.ready`.
 * - Every worker leads its own process group, as command and module workers
 *   do, and dies with the primary. `node:cluster` offers neither (no
 *   `detached`, no wrapper): a cluster worker shared the primary's group, and
 *   one busy in a CPU loop never noticed its channel closing, so it outlived
 *   a SIGKILLed primary. So on Linux the worker is started through `setsid`
 *   (a new session and group; a fresh child is no group leader, so `setsid`
 *   execs without forking: the pid stays the worker's), then the real `node`.
 *   `cluster.fork` has no option for the program it runs (it uses
 *   `process.execPath`), so `process.execPath` points at `setsid` for the
 *   duration of the synchronous `cluster.fork` call, and is restored in a
 *   `finally`. Where `setsid` is missing (macOS) workers stay in the
 *   primary's group, and are signaled and watched by pid.
 * - When the primary dies, a worker first sees its IPC channel close and
 *   exits by itself (`Prefork.run` workers run their finalizers); the
 *   watchdog SIGKILLs any still running 1.5 s later. Without a watchdog,
 *   `setpriv --pdeathsig KILL` (where available) kills workers at once.
 * - A worker that cannot be forked (EMFILE, EAGAIN) is a `SpawnFailed` with
 *   that `code` (`transient`: the supervisor retries it): the cluster
 *   `Worker`'s `'error'` has a listener, so it never crashes the primary, and
 *   the failed worker is taken out of `cluster.workers`.
 * - `uid`/`gid` go to `node:cluster`'s fork, whose libuv spawn sets them
 *   (and clears the supplementary groups) before `setsid` execs `node`.
 * - Bytes on a worker's IPC channel that are not a message cost the worker
 *   (SIGKILL, restarted as a crash), never the primary.
 * - Heartbeats and spares work as for module workers, by a preload in the
 *   worker's Node options (see `internal/preload.ts`). A heartbeat worker's
 *   inspector port is 0 (any free port), also in the `--inspect-port` that
 *   `node:cluster` appends to the options of a worker using the inspector.
 *
 * @since 0.1.0
 */
import cluster, { type Worker } from "node:cluster"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type { SpawnFailed } from "../Errors.ts"
import type { ProcessHandle, SpawnRequest } from "../ProcessSpawner.ts"
import { attach, errorCode, failed, release, spawnError, type Runner, runner, type Started } from "./internal/child.ts"
import { findUtilLinux } from "./internal/preflight.ts"
import * as Preload from "./internal/preload.ts"
import type { Watchdog } from "./internal/watchdog.ts"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /**
   * A `setpriv` that supports `--pdeathsig` (probed). Used only without a
   * watchdog: the kernel's SIGKILL leaves a worker no time for finalizers.
   */
  readonly setpriv?: string | undefined
  /**
   * The primary's watchdog. It is told of every worker, to SIGKILL it 1.5 s
   * after the primary died if it has not exited by itself by then.
   */
  readonly watchdog?: Watchdog | undefined
}

/**
 * Forks a cluster worker with `execArgv` for `node`, through `wrapper` (a
 * program and its arguments that end up exec-ing the real `node` with the
 * rest of the command line) unless it is empty. Only this one fork sees the
 * wrapper: `process.execPath` and `cluster.settings.execArgv` are put back
 * before it returns, so another `cluster.fork()` in the program is unaffected.
 * The same goes for `inspectPort`, set for this fork when it is given.
 */
const forkThrough = (
  wrapper: ReadonlyArray<string>,
  execArgv: ReadonlyArray<string>,
  env: Record<string, string>,
  inspectPort: number | undefined
): Worker => {
  const settings = cluster.settings as { inspectPort?: number | (() => number) | undefined }
  const hadPort = "inspectPort" in settings
  const port = settings.inspectPort
  if (inspectPort !== undefined) settings.inspectPort = inspectPort
  const node = process.execPath
  if (wrapper.length > 0) {
    // `fork` runs `options.execPath || process.execPath` with `[...execArgv, script, ...args]`.
    cluster.settings.execArgv = [...wrapper.slice(1), node, ...execArgv]
    process.execPath = wrapper[0]!
  }
  try {
    return cluster.fork(env)
  } finally {
    process.execPath = node
    cluster.settings.execArgv = [...execArgv]
    if (inspectPort !== undefined) {
      if (hadPort) settings.inspectPort = port
      else delete settings.inspectPort
    }
  }
}

/**
 * The cluster half of the Node spawner.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}) => {
  const setsid = findUtilLinux("setsid")
  const { setpriv, watchdog } = options
  // setsid [setpriv --pdeathsig KILL --] node <execArgv> <script> <args>: each execs the next, same pid.
  const chain: Array<string> = [
    ...(setsid === undefined ? [] : [setsid]),
    ...(setpriv === undefined || watchdog !== undefined ? [] : [setpriv, "--pdeathsig", "KILL", "--"])
  ]

  const start = (request: SpawnRequest, run: Runner): Effect.Effect<Started, SpawnFailed> =>
    Effect.suspend(() => {
      if (!cluster.isPrimary) {
        return Effect.fail(failed(request, undefined, "cluster workers can only be started from the cluster primary"))
      }
      const out = request.stdio
      const execArgv = Preload.nodeOptions(request, request.execArgv ?? process.execArgv)
      cluster.setupPrimary({
        exec: request.command,
        args: [...request.args],
        execArgv,
        ...(request.cwd === undefined ? {} : { cwd: request.cwd }),
        silent: out !== "inherit",
        stdio: ["ignore", out, out, "ipc"],
        ...(request.uid === undefined ? {} : { uid: request.uid }),
        ...(request.gid === undefined ? {} : { gid: request.gid })
      })
      // A watchdog runs before the worker does (and lists it right after its fork).
      const watch = watchdog?.retain()
      let worker: Worker
      try {
        worker = forkThrough(
          chain,
          execArgv,
          { ...Preload.environment(request), ...Preload.preloadEnvironment(execArgv, request), ...watch?.env },
          Preload.inspectsOnAnyPort(execArgv) ? 0 : undefined
        )
      } catch (error) {
        watch?.done()
        return Effect.fail(failed(request, errorCode(error), spawnError(error)))
      }
      // The cluster Worker re-emits its process's 'error'; without a listener that would throw in the primary.
      // A failure to start is reported by `attach` (on the process); a worker that never started is forgotten.
      worker.on("error", () => {
        if (worker.process.pid === undefined) delete cluster.workers?.[worker.id]
      })
      return attach(request, worker.process, {
        pgid: setsid === undefined ? undefined : worker.process.pid,
        onListening: (notify) => worker.once("listening", notify),
        watch: watch === undefined ? undefined : { watch, when: "late" },
        run
      })
    })

  return {
    spawn: (request: SpawnRequest): Effect.Effect<ProcessHandle, SpawnFailed, Scope.Scope> =>
      Effect.acquireRelease(
        Effect.flatMap(runner, (run) => start(request, run)),
        release
      ).pipe(Effect.map(({ handle }) => handle))
  }
}
