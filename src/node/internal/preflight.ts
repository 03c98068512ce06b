/**
 * Checks made before any process is created, so that what cannot run fails
 * as a typed `SpawnFailed` instead of a worker that exits at once, again and
 * again.
 *
 * It matters most when workers are started through `setpriv`: `setpriv`
 * itself always starts, and an `execve` that fails after it (a missing
 * interpreter on the `#!` line, a file without execute permission) becomes
 * "exited with status 127" (or 126) and a restart loop, where a direct
 * `spawn` would have failed with `ENOENT` or `EACCES`.
 */
import { spawn } from "node:child_process"
import { accessSync, closeSync, constants as fsConstants, openSync, readSync, statSync } from "node:fs"
import * as Path from "node:path"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"

/** Why a program cannot be started: a `SpawnFailed` code and the reason. */
export interface Unstartable {
  readonly code: "ENOENT" | "EACCES"
  readonly message: string
}

/** Where util-linux installs `setpriv` and `setsid`. */
const UTIL_LINUX_DIRS = ["/usr/bin", "/bin"]

/** How many `#!` interpreters may be scripts themselves (Linux allows 4 levels). */
const MAX_INTERPRETER_DEPTH = 4

/** The kernel reads at most this much of a `#!` line (`BINPRM_BUF_SIZE`). */
const SHEBANG_MAX = 256

/** @internal */
export const isExecutableFile = (file: string): boolean => {
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
 * @internal
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
  return Option.fromUndefinedOr(searchPath(command, pathVariable, cwd).find(isExecutableFile))
}

/** The candidate files for a bare command name, in `PATH` order (an empty entry is the current directory). */
const searchPath = (command: string, pathVariable: string | undefined, cwd: string): Array<string> =>
  (pathVariable ?? "/usr/local/bin:/usr/bin:/bin")
    .split(Path.delimiter)
    .map((dir) => Path.resolve(cwd, dir === "" ? "." : dir, command))

/** The first line of `file` if it starts with `#!`: the interpreter and its argument string. */
const readShebang = (file: string): { readonly interpreter: string; readonly argument: string } | undefined => {
  let fd: number
  try {
    fd = openSync(file, "r")
  } catch {
    return undefined
  }
  try {
    const buffer = Buffer.alloc(SHEBANG_MAX)
    const n = readSync(fd, buffer, 0, SHEBANG_MAX, 0)
    if (n < 2 || buffer[0] !== 0x23 || buffer[1] !== 0x21) return undefined
    const end = buffer.indexOf(0x0a)
    const line = buffer.toString("latin1", 2, end === -1 || end > n ? n : end).trim()
    const space = line.search(/[ \t]/)
    return space === -1
      ? { interpreter: line, argument: "" }
      : { interpreter: line.slice(0, space), argument: line.slice(space).trim() }
  } catch {
    return undefined
  } finally {
    closeSync(fd)
  }
}

/**
 * The command `/usr/bin/env` would run for its argument string: the first
 * word that is neither an option nor a `NAME=value` assignment (`-S` splits
 * the rest into words, as `env -S` does).
 */
const envCommand = (argument: string): string | undefined =>
  argument.split(/[ \t]+/).find((word) => word.length > 0 && !word.startsWith("-") && !word.includes("="))

/**
 * Why the resolved executable `file` cannot be started, if it cannot: it is
 * not executable (`EACCES`), or its `#!` interpreter is missing or not
 * executable, following interpreters that are scripts themselves and
 * `#!/usr/bin/env NAME` (searched in the worker's `PATH`).
 *
 * @internal
 */
export const unstartable = (
  file: string,
  pathVariable: string | undefined,
  cwd: string,
  depth = 0
): Unstartable | undefined => {
  const shebang = readShebang(file)
  if (shebang === undefined) return undefined
  const { argument, interpreter } = shebang
  // An empty `#!` line is not an interpreter: execve fails with ENOEXEC and execvp runs the file with /bin/sh.
  if (interpreter === "") return undefined
  // A relative interpreter is resolved as execve does, against the worker's directory.
  const target = Path.resolve(cwd, interpreter)
  const missing = checkFile(target, `${file}: its #! interpreter ${interpreter}`)
  if (missing !== undefined) return missing
  if (Path.basename(target) === "env") {
    const name = envCommand(argument)
    if (name !== undefined) {
      const resolved = resolveExecutable(name, pathVariable, cwd)
      if (Option.isNone(resolved)) {
        return {
          code: "ENOENT",
          message: `${file}: its #! interpreter ${name} (#!${interpreter} ${argument}) was not found in PATH`
        }
      }
      return depth < MAX_INTERPRETER_DEPTH ? unstartable(resolved.value, pathVariable, cwd, depth + 1) : undefined
    }
  }
  return depth < MAX_INTERPRETER_DEPTH ? unstartable(target, pathVariable, cwd, depth + 1) : undefined
}

const notFound = (command: string): Unstartable => ({ code: "ENOENT", message: `${command}: no such executable file` })

/** `ENOENT` if `file` does not exist, `EACCES` if it is not an executable file. */
const checkFile = (file: string, what: string): Unstartable | undefined => {
  try {
    statSync(file)
  } catch {
    return { code: "ENOENT", message: `${what} does not exist` }
  }
  return isExecutableFile(file) ? undefined : { code: "EACCES", message: `${what} is not an executable file` }
}

/**
 * Resolves a `"command"` worker's executable and checks that it can start:
 * `ENOENT` if it is not found, `EACCES` if it exists but cannot be executed,
 * or the reason its `#!` interpreter cannot run.
 *
 * @internal
 */
export const preflight = (
  command: string,
  pathVariable: string | undefined,
  cwd: string
): { readonly file: string } | Unstartable => {
  const resolved = resolveExecutable(command, pathVariable, cwd)
  if (Option.isNone(resolved)) {
    if (command.includes("/")) return checkFile(Path.resolve(cwd, command), command) ?? notFound(command)
    // As execvp: a file found in PATH but not executable is EACCES, nothing at all is ENOENT.
    const found = searchPath(command, pathVariable, cwd).find((file) => checkFile(file, file)?.code === "EACCES")
    return found === undefined
      ? { code: "ENOENT", message: "no such executable file (searched PATH)" }
      : { code: "EACCES", message: `${found} is not an executable file` }
  }
  return unstartable(resolved.value, pathVariable, cwd) ?? { file: resolved.value }
}

/** The util-linux tool `name` (`setpriv`, `setsid`) on Linux, if installed. */
export const findUtilLinux = (name: "setpriv" | "setsid"): string | undefined =>
  process.platform === "linux" ? UTIL_LINUX_DIRS.map((dir) => `${dir}/${name}`).find(isExecutableFile) : undefined

/**
 * Runs `setpriv --pdeathsig KILL -- <true>` and says whether it worked:
 * `setpriv` from util-linux before about 2.33 has no `--pdeathsig`, and a
 * wrapper that fails would turn every worker into an exit-status-1 loop.
 *
 * @internal
 */
export const probeSetpriv = (setpriv: string): Effect.Effect<boolean> =>
  Effect.callback<boolean>((resume) => {
    const truth = ["/bin/true", "/usr/bin/true"].find(isExecutableFile)
    if (truth === undefined) return resume(Effect.succeed(false))
    try {
      const child = spawn(setpriv, ["--pdeathsig", "KILL", "--", truth], { stdio: "ignore", windowsHide: true })
      child.once("error", () => resume(Effect.succeed(false)))
      child.once("exit", (code) => resume(Effect.succeed(code === 0)))
    } catch {
      resume(Effect.succeed(false))
    }
  })
