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
 *   SIGKILLed.
 * - A command that cannot be found or executed fails with `SpawnFailed`
 *   before any process is created.
 *
 * Cluster mode (`mode: "cluster"`) is served by the same layer through
 * `node:cluster`: see `NodeClusterSpawner`.
 *
 * @since 0.1.0
 */
import { type ChildProcess, spawn as nodeSpawn, type StdioOptions } from "node:child_process"
import { accessSync, constants as fsConstants, statSync } from "node:fs"
import * as Path from "node:path"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type { SpawnFailed } from "../Errors.ts"
import { ProcessSpawner, type SpawnRequest } from "../ProcessSpawner.ts"
import { attach, errorCode, failed, release, type Started } from "./internal/child.ts"
import * as Watchdog from "./internal/watchdog.ts"
import * as NodeClusterSpawner from "./NodeClusterSpawner.ts"

const SETPRIV_PATHS = ["/usr/bin/setpriv", "/bin/setpriv"]

/**
 * The `setpriv` binary that arranges for workers to die with the primary, or
 * `undefined` where there is none (not Linux, or util-linux missing).
 *
 * @since 0.1.0
 * @category utils
 */
export const findSetpriv = (): string | undefined =>
  process.platform === "linux" ? SETPRIV_PATHS.find(isExecutableFile) : undefined

const isExecutableFile = (file: string): boolean => {
  try {
    accessSync(file, fsConstants.X_OK)
    return statSync(file).isFile()
  } catch {
    return false
  }
}

/**
 * Finds an executable the way `execvp` would: a name with a `/` is taken
 * relative to `cwd`, any other name is searched in `PATH`.
 *
 * @since 0.1.0
 * @category utils
 */
export const resolveExecutable = (
  command: string,
  pathVariable: string | undefined,
  cwd: string
): Option.Option<string> => {
  if (command.includes("/")) {
    const file = Path.resolve(cwd, command)
    return isExecutableFile(file) ? Option.some(file) : Option.none()
  }
  for (const dir of (pathVariable ?? "/usr/local/bin:/usr/bin:/bin").split(Path.delimiter)) {
    const file = Path.resolve(cwd, dir === "" ? "." : dir, command)
    if (isExecutableFile(file)) return Option.some(file)
  }
  return Option.none()
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Wrap workers with `setpriv --pdeathsig KILL` (Linux). Default: when `setpriv` is present. */
  readonly parentDeathSignal?: boolean | undefined
  /**
   * Start a watchdog process that SIGKILLs the workers' process groups if the
   * primary dies (for `"command"` and `"module"` workers). Default: where
   * `setpriv` is not used (macOS, or Linux without util-linux).
   */
  readonly watchdog?: boolean | undefined
}

const killGroup = (child: ChildProcess) => (pid: number, signal: NodeJS.Signals) => {
  try {
    process.kill(-pid, signal)
  } catch {
    // The group is gone but the leader is not reaped yet: signal the leader alone.
    child.kill(signal)
  }
}

/**
 * Builds the spawner.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<ProcessSpawner["Service"]> =>
  Effect.gen(function* () {
    const setpriv = options.parentDeathSignal === false ? undefined : findSetpriv()
    const watchdog = (options.watchdog ?? setpriv === undefined) ? Watchdog.make() : undefined
    const cluster = NodeClusterSpawner.make()

    const start = (request: SpawnRequest): Effect.Effect<Started, SpawnFailed> =>
      Effect.suspend(() => {
        const cwd = request.cwd ?? process.cwd()
        const env = { ...process.env, ...request.env }
        const out = request.stdio
        let file: string
        let argv: Array<string>
        let stdio: StdioOptions
        if (request.mode === "module") {
          file = process.execPath
          argv = [...(request.execArgv ?? process.execArgv), request.command, ...request.args]
          stdio = ["ignore", out, out, "ipc"]
        } else {
          const resolved = resolveExecutable(request.command, env.PATH, cwd)
          if (Option.isNone(resolved)) {
            return Effect.fail(failed(request, "ENOENT", "no such executable file (searched PATH)"))
          }
          file = resolved.value
          argv = [...request.args]
          stdio = ["ignore", out, out]
        }
        if (setpriv !== undefined) {
          argv = ["--pdeathsig", "KILL", "--", file, ...argv]
          file = setpriv
        }
        let child: ChildProcess
        try {
          child = nodeSpawn(file, argv, { cwd, env, stdio, detached: true, windowsHide: true })
        } catch (error) {
          return Effect.fail(failed(request, errorCode(error), String(error)))
        }
        const started = attach(request, child, { kill: killGroup(child) })
        if (watchdog === undefined) return started
        return Effect.tap(started, ({ handle }) =>
          Effect.sync(() => {
            const pid = handle.pid
            watchdog.watch(pid)
            child.once("exit", () => watchdog.unwatch(pid))
          })
        )
      })

    return ProcessSpawner.of({
      spawn: (request) =>
        request.mode === "cluster"
          ? cluster.spawn(request)
          : Effect.acquireRelease(start(request), release(request)).pipe(Effect.map(({ handle }) => handle))
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
