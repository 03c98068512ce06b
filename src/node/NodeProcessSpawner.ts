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
 * @since 0.1.0
 */
import { type ChildProcess, spawn as nodeSpawn, type StdioOptions } from "node:child_process"
import { accessSync, constants as fsConstants, statSync } from "node:fs"
import * as Path from "node:path"
import { StringDecoder } from "node:string_decoder"
import { Deferred, Duration, Effect, Layer, Option } from "effect"
import { SpawnFailed } from "../Errors.ts"
import * as ExitStatus from "../ExitStatus.ts"
import { type ProcessHandle, ProcessSpawner, type SpawnRequest, stop } from "../ProcessSpawner.ts"

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
 * Calls `onLine` with each complete line of a byte stream as it arrives, and
 * with the unterminated rest when the stream ends. UTF-8 characters split
 * across chunks are decoded whole. A line longer than 1 MiB is passed on in
 * 1 MiB pieces, so a worker that never writes a newline cannot grow the
 * primary's memory.
 */
const MAX_LINE = 1 << 20

const splitLines = (stream: NodeJS.ReadableStream, onLine: (line: string) => void): void => {
  const decoder = new StringDecoder("utf8")
  let pending = ""
  stream.on("data", (chunk: Buffer) => {
    const text = pending + decoder.write(chunk)
    let start = 0
    for (let nl = text.indexOf("\n"); nl !== -1; nl = text.indexOf("\n", start)) {
      onLine(text.slice(start, nl))
      start = nl + 1
    }
    pending = text.slice(start)
    if (pending.length > MAX_LINE) {
      onLine(pending)
      pending = ""
    }
  })
  stream.on("end", () => {
    const rest = pending + decoder.end()
    pending = ""
    if (rest.length > 0) onLine(rest)
  })
}

interface Started {
  readonly handle: ProcessHandle
  /** Completes when the process has exited and its stdio streams have closed. */
  readonly drained: Effect.Effect<void>
}

const DRAIN_TIMEOUT = Duration.millis(500)

interface Options {
  /** Wrap workers with `setpriv --pdeathsig KILL` (Linux). Default: when `setpriv` is present. */
  readonly parentDeathSignal?: boolean | undefined
}

const failed = (request: SpawnRequest, code: string | undefined, message: string) =>
  new SpawnFailed({
    taskId: request.taskId,
    command: request.command,
    message: `cannot start child ${request.taskId} (${request.command}): ${message}`,
    ...(code === undefined ? {} : { code })
  })

const errorCode = (error: unknown): string | undefined =>
  typeof error === "object" && error !== null && "code" in error && typeof error.code === "string"
    ? error.code
    : undefined

/**
 * Builds the spawner.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): ProcessSpawner["Service"] => {
  const setpriv = options.parentDeathSignal === false ? undefined : findSetpriv()

  const start = (request: SpawnRequest) =>
    Effect.callback<Started, SpawnFailed>((resume) => {
      const cwd = request.cwd ?? process.cwd()
      const env = { ...process.env, ...request.env }
      let file: string
      let argv: Array<string>
      const out = request.stdio === "inherit" ? "inherit" : request.stdio === "pipe" ? "pipe" : "ignore"
      let stdio: StdioOptions
      if (request.mode === "module") {
        file = process.execPath
        argv = [...(request.execArgv ?? process.execArgv), request.command, ...request.args]
        stdio = ["ignore", out, out, "ipc"]
      } else {
        const resolved = resolveExecutable(request.command, env.PATH, cwd)
        if (Option.isNone(resolved)) {
          return resume(Effect.fail(failed(request, "ENOENT", "no such executable file (searched PATH)")))
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
        return resume(Effect.fail(failed(request, errorCode(error), String(error))))
      }
      const exited = Deferred.makeUnsafe<ExitStatus.ExitStatus>()
      const closed = Deferred.makeUnsafe<void>()
      child.once("close", () => Deferred.doneUnsafe(closed, Effect.void))
      let status: ExitStatus.ExitStatus | undefined
      let spawned = false
      child.once("exit", (code, signal) => {
        status = ExitStatus.fromNode(code, signal)
        Deferred.doneUnsafe(exited, Effect.succeed(status))
      })
      child.on("error", (error) => {
        // Before 'spawn' this is a failure to start; afterwards (a failed kill or IPC send) the exit tells the rest.
        if (!spawned) resume(Effect.fail(failed(request, errorCode(error), error.message)))
      })
      child.once("spawn", () => {
        spawned = true
        const pid = child.pid!
        if (request.stdio === "pipe" && request.onOutput !== undefined) {
          const onOutput = request.onOutput
          const emit = (stream: "stdout" | "stderr") => (line: string) =>
            onOutput({ taskId: request.taskId, pid, stream, line })
          if (child.stdout) splitLines(child.stdout, emit("stdout"))
          if (child.stderr) splitLines(child.stderr, emit("stderr"))
        }
        resume(Effect.succeed({
          drained: Deferred.await(closed),
          handle: {
          taskId: request.taskId,
          pid,
          exit: Deferred.await(exited),
          exitStatus: Effect.sync(() => Option.fromUndefinedOr(status)),
          kill: (signal) =>
            Effect.sync(() => {
              if (status !== undefined) return
              try {
                process.kill(-pid, signal)
              } catch {
                // The group is gone but the leader is not reaped yet: signal the leader alone.
                child.kill(signal)
              }
            })
        }}))
      })
    })

  return ProcessSpawner.of({
    spawn: (request) =>
      Effect.acquireRelease(start(request), ({ drained, handle }) =>
        stop(handle, request.stopTimeout).pipe(
          // Piped output: let the last lines of the worker through, but never wait on a grandchild holding the pipe.
          Effect.andThen(request.stdio === "pipe" ? Effect.timeoutOption(drained, DRAIN_TIMEOUT) : Effect.void)
        )).pipe(Effect.map(({ handle }) => handle))
  })
}

/**
 * The spawner for real processes.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<ProcessSpawner> = Layer.sync(ProcessSpawner, () => make())

/**
 * The spawner with options, such as turning off the parent-death signal.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerWith = (options: Options): Layer.Layer<ProcessSpawner> => Layer.sync(ProcessSpawner, () => make(options))
