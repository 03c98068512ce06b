/**
 * Real worker processes with Node's `child_process`: any command with
 * `spawn` (never through a shell), and Node modules with the current `node`
 * and an IPC channel, as `fork` does.
 *
 * - The exit is Node's `'exit'` event, kept as data: `(code, signal)` becomes
 *   an `ExitStatus`. (`'close'` waits for stdio to end, which a grandchild
 *   holding the pipe can delay forever.)
 * - Every worker leads its own process group, so a terminal's Ctrl-C reaches
 *   only the primary, and stopping a worker signals its whole group. Once a
 *   worker has been reaped it is never signaled again (its pid may be reused).
 * - On Linux every worker is started through `setpriv --pdeathsig KILL`, which
 *   execs the real program (same pid, same exit status) after asking the kernel
 *   to SIGKILL it when the primary dies: no orphans even if the primary is
 *   SIGKILLed. Whether `setpriv` supports it is probed once per layer. A
 *   watchdog process (one per layer) does the same for the rest of each
 *   worker's process group, and for the workers themselves where `setpriv`
 *   is not available (macOS).
 * - Stopping a worker stops its whole process group, also what is left of it
 *   after the leader exited by itself (see `ProcessHandle.stop`).
 * - A command that cannot be found or executed fails with `SpawnFailed`
 *   before any process is created: a file without execute permission is
 *   `EACCES`, a missing `#!` interpreter (also `#!/usr/bin/env NAME` with NAME
 *   not in PATH) is `ENOENT`. A spawn the system refused for want of a
 *   resource is a `SpawnFailed` whose `code` says which (`EMFILE`, `ENFILE`,
 *   `EAGAIN`: Node 24 emits them as the child's `'error'`; `ENOMEM`: thrown
 *   by `spawn`) and whose `transient` is set: the supervisor retries it.
 * - `uid`/`gid` are applied by libuv in the child before its first `exec`
 *   (of `setpriv`, of the `sh` that sets `LISTEN_PID`, or of the worker),
 *   which also clears the supplementary groups (`setgroups(0, NULL)`) when
 *   either is set: every program of the chain, and the worker, runs with
 *   exactly that uid, gid and no other group.
 * - Piped output is always read (and dropped without `onOutput`), with
 *   backpressure when `onOutput` returns an effect; bytes on a module
 *   worker's IPC channel that are not a message cost the worker (SIGKILL,
 *   restarted as a crash), never the primary.
 * - Heartbeats (`SpawnRequest.heartbeat`): a module worker beats from its
 *   own event loop, by a preload given to `node` (see `internal/preload.ts`),
 *   with no code of its own. A command gets a pipe as one more descriptor,
 *   right after its sockets (descriptor 3 without sockets), named by
 *   `PREFORK_HEARTBEAT_FD`, with the interval in milliseconds in
 *   `PREFORK_HEARTBEAT_MS`: it beats by writing any byte to it (`printf . >&"$PREFORK_HEARTBEAT_FD"`
 *   in a shell); every chunk the primary reads is a beat, and is dropped.
 * - Spares (`SpawnRequest.spare`) are module (and cluster) workers only:
 *   a command has no channel to be told its task id by.
 * - The HTTP drain (`SpawnRequest.drain`, on by default) is part of the
 *   preload of module and cluster workers, and a command that is `node …`
 *   gets the same preload as its first option (see `internal/drain.ts`).
 *
 * Cluster mode (`mode: "cluster"`) is served by the same layer through
 * `node:cluster`: see `NodeClusterSpawner`.
 *
 * @since 0.1.0
 */
import { type ChildProcess, spawn as nodeSpawn, type StdioOptions } from "node:child_process"
import type { Readable } from "node:stream"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import type * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import type { SpawnFailed } from "../Errors.ts"
import { ProcessSpawner, type SpawnRequest } from "../ProcessSpawner.ts"
import { attach, errorCode, failed, release, spawnError, type Runner, runner, type Started } from "./internal/child.ts"
import * as Preflight from "./internal/preflight.ts"
import * as Listen from "../Listen.ts"
import * as Preload from "./internal/preload.ts"
import * as Sockets from "./internal/sockets.ts"
import * as Watchdog from "./internal/watchdog.ts"
import * as NodeClusterSpawner from "./NodeClusterSpawner.ts"

/**
 * The `setpriv` binary that can arrange for workers to die with the primary,
 * or `undefined` where there is none (not Linux, or util-linux missing).
 * Whether it supports `--pdeathsig` is checked when the layer is built.
 *
 * @since 0.1.0
 * @category utils
 */
export const findSetpriv = (): string | undefined => Preflight.findUtilLinux("setpriv")

/**
 * Finds an executable the way `execvp` would: a name with a `/` is taken
 * relative to `cwd`, any other name is searched in `PATH`.
 *
 * @since 0.1.0
 * @category utils
 */
export const resolveExecutable: (
  command: string,
  pathVariable: string | undefined,
  cwd: string
) => Option.Option<string> = Preflight.resolveExecutable

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /**
   * Wrap workers with `setpriv --pdeathsig KILL` (Linux). Default: when
   * `setpriv` is installed and supports it (probed when the layer is built).
   */
  readonly parentDeathSignal?: boolean | undefined
  /**
   * Run a watchdog process (a tiny `sh`, one per layer) that SIGKILLs the
   * workers' process groups if the primary dies: the whole group, where
   * `setpriv` reaches only the worker itself, and cluster workers, which are
   * first given 1.5 s to notice the lost primary and exit by themselves.
   * Default: `true`. Without it, a cluster worker busy in a loop outlives a
   * SIGKILLed primary unless `setpriv` kills it at once (then with no time
   * for its finalizers), and so do the children of any worker.
   */
  readonly watchdog?: boolean | undefined
}

/** Exports `LISTEN_PID=$$` (the shell's pid, which `exec` hands on to the worker) and runs the worker. */
const SET_LISTEN_PID = 'LISTEN_PID=$$; export LISTEN_PID; exec "$@"'

/**
 * The supervisor's own socket-activation variables are not its workers': each
 * worker gets its own or none. Nor are the heartbeat and spare variables a
 * supervisor may have been started with itself.
 */
const withoutActivation = (env: NodeJS.ProcessEnv): NodeJS.ProcessEnv => {
  const { LISTEN_FDNAMES: _names, LISTEN_FDS: _fds, LISTEN_PID: _pid, ...rest } = env
  for (const name of Preload.OWN_VARS) delete rest[name]
  return rest
}

/**
 * Builds the spawner for the lifetime of the current scope: probes `setpriv`,
 * and starts the watchdog if one is needed (it ends with the scope).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<ProcessSpawner["Service"], never, Scope.Scope> =>
  Effect.gen(function* () {
    const found = options.parentDeathSignal === false ? undefined : findSetpriv()
    // The probe runs beside the rest of the supervisor's start (its watchdog, control socket, first log
    // lines): only a spawn waits for its answer, and only the first one waits at all.
    // Detached, not scoped: a supervisor may outlive the scope its spawner was built in (see the watchdog).
    const probed = yield* Effect.forkDetach(
      found === undefined
        ? Effect.succeed<string | undefined>(undefined)
        : Preflight.probeSetpriv(found).pipe(Effect.map((works) => (works ? found : undefined))),
      { startImmediately: true }
    )
    const watchdog = options.watchdog === false ? undefined : yield* Watchdog.make
    let known:
      | { readonly setpriv: string | undefined; readonly cluster: ReturnType<typeof NodeClusterSpawner.make> }
      | undefined
    /** The probe's answer, and the cluster half built with it. */
    const probe = Effect.suspend(() =>
      known !== undefined
        ? Effect.succeed(known)
        : Effect.flatMap(Fiber.join(probed), (setpriv) => {
            if (known !== undefined) return Effect.succeed(known)
            known = { setpriv, cluster: NodeClusterSpawner.make({ setpriv, watchdog }) }
            const said = known
            if (found === undefined || setpriv !== undefined) return Effect.succeed(said)
            return Effect.as(
              options.watchdog === false
                ? Effect.logWarning(
                    `${found} cannot run a program with --pdeathsig, and the watchdog is off: workers may outlive this process if it is killed`
                  )
                : Effect.logDebug(
                    `${found} cannot run a program with --pdeathsig: the watchdog alone will kill workers left by a dead primary`
                  ),
              said
            )
          })
    )

    const start = (
      request: SpawnRequest,
      run: Runner,
      setpriv: string | undefined
    ): Effect.Effect<Started, SpawnFailed> =>
      Effect.suspend(() => {
        const cwd = request.cwd ?? process.cwd()
        const sockets = request.sockets ?? []
        // A command's heartbeat pipe comes right after its sockets.
        const beatFd =
          request.mode === "command" && Preload.heartbeatMillis(request) !== undefined ? 3 + sockets.length : undefined
        const env = {
          ...withoutActivation(process.env),
          ...Preload.environment(request, beatFd),
          ...Listen.environment(sockets)
        }
        const out = request.stdio
        // The supervisor's sockets become the worker's descriptors 3, 4, …, before its IPC channel.
        const fds = sockets.map((s) => s.fd)
        let file: string
        let argv: Array<string>
        let stdio: StdioOptions
        if (request.mode === "module") {
          file = process.execPath
          argv = [
            ...Preload.nodeOptions(request, request.execArgv ?? process.execArgv),
            request.command,
            ...request.args
          ]
          stdio = ["ignore", out, out, ...fds, "ipc"]
        } else {
          if (request.spare === true) {
            return Effect.fail(
              failed(request, undefined, "a command cannot be a spare (only module and cluster workers)")
            )
          }
          const checked = Preflight.preflight(request.command, env.PATH, cwd)
          if ("code" in checked) return Effect.fail(failed(request, checked.code, checked.message))
          file = checked.file
          // The command `node …` drains as a module worker does: the preload goes first among its options.
          argv =
            Preload.isNode(request.command) && Preload.drains(request)
              ? [Preload.importOption, ...request.args]
              : [...request.args]
          stdio = ["ignore", out, out, ...fds, ...(beatFd === undefined ? [] : ["pipe" as const])]
        }
        Object.assign(env, Preload.preloadEnvironment(argv, request))
        if (sockets.length > 0) {
          // LISTEN_PID is the worker's own pid: set by a shell that then execs the worker (same pid).
          // The worker's command and arguments reach it as "$@", never as shell text.
          argv = ["-c", SET_LISTEN_PID, "prefork-listen", file, ...argv]
          file = "/bin/sh"
        }
        if (setpriv !== undefined) {
          argv = ["--pdeathsig", "KILL", "--", file, ...argv]
          file = setpriv
        }
        // A watchdog runs before the worker does (and lists it right after its spawn).
        const watch = watchdog?.retain()
        let child: ChildProcess
        try {
          child = nodeSpawn(file, argv, {
            cwd,
            env: { ...env, ...watch?.env },
            stdio,
            detached: true,
            windowsHide: true,
            ...(request.uid === undefined ? {} : { uid: request.uid }),
            ...(request.gid === undefined ? {} : { gid: request.gid })
          })
        } catch (error) {
          watch?.done()
          return Effect.fail(failed(request, errorCode(error), spawnError(error)))
        }
        // `detached`: the child called setsid() before its exec, so it leads a group with its own pid.
        // A pipe in `stdio` is a duplex socket; the primary only reads from it.
        const beats = beatFd === undefined ? undefined : ((child.stdio[beatFd] as Readable | null) ?? undefined)
        return attach(request, child, {
          pgid: child.pid,
          watch: watch === undefined ? undefined : { watch, when: "now" },
          beats,
          run
        })
      })

    return ProcessSpawner.of({
      listen: Sockets.listen,
      spawn: (request) =>
        Effect.flatMap(probe, ({ cluster, setpriv }) =>
          request.mode === "cluster"
            ? cluster.spawn(request)
            : Effect.acquireRelease(
                Effect.flatMap(runner, (run) => start(request, run, setpriv)),
                release
              ).pipe(Effect.map(({ handle }) => handle))
        )
    })
  })

/**
 * The spawner for real processes, in every mode.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<ProcessSpawner> = Layer.effect(ProcessSpawner, make())

/**
 * The spawner with options, such as turning off the parent-death signal.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerWith = (options: Options): Layer.Layer<ProcessSpawner> => Layer.effect(ProcessSpawner, make(options))
