/**
 * `prefork --pid-file <file>`: prefork's own pid in a file for the life of a
 * scope, written so that nobody else's file is ever touched through it.
 *
 * - The pid is written to a new file with a random name in the same
 *   directory, created exclusively (`O_CREAT | O_EXCL | O_NOFOLLOW`, mode 0644
 *   under the umask), then moved into place: `link` when there was no pid
 *   file (it fails if one appeared meanwhile), `rename` over a stale one
 *   (`rename` replaces a symbolic link, it never follows it). A reader never
 *   sees the file empty.
 * - A pid file that exists and names a live process other than prefork is
 *   refused ("already running"); one naming a process that is gone (or empty)
 *   is stale and replaced. Anything else at the path (a symbolic link, a
 *   directory, a FIFO, a file that does not hold a pid) is refused, untouched.
 * - At the end it is removed only if it is still the file written (same
 *   device and inode, `lstat`) and still holds prefork's pid.
 * - No mode of anything is ever changed.
 *
 * Every refusal is an `InvalidOptions` for the field `pid-file`.
 *
 * @since 0.1.0
 */
import * as Fs from "node:fs"
import * as Path from "node:path"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { InvalidOptions } from "../Errors.ts"

/** The most of an existing pid file read: a pid is a few digits. */
const MAX_READ = 64

const refuse = (message: string) => new InvalidOptions({ field: "pid-file", message: `--pid-file: ${message}` })

const code = (error: unknown): string | undefined => (error as NodeJS.ErrnoException | undefined)?.code

const describeError = (error: unknown): string =>
  code(error) ?? (error instanceof Error ? error.message : String(error))

/** Whether a process with that pid exists (one of another user counts: `EPERM`). */
const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return code(error) === "EPERM"
  }
}

/** What is at the path now: nothing, a file we may replace (stale or ours), or a reason to refuse. */
type Existing =
  | { readonly _tag: "None" }
  | { readonly _tag: "Stale" }
  | { readonly _tag: "Refuse"; readonly why: string }

/** Reads an existing pid file without following a link or blocking on a FIFO, and says what to do with it. */
const inspect = (file: string): Existing => {
  let stat: Fs.Stats
  try {
    stat = Fs.lstatSync(file)
  } catch (error) {
    if (code(error) === "ENOENT") return { _tag: "None" }
    return { _tag: "Refuse", why: `cannot check ${file}: ${describeError(error)}` }
  }
  if (stat.isSymbolicLink()) return { _tag: "Refuse", why: `${file} is a symbolic link; refusing to write through it` }
  if (!stat.isFile()) return { _tag: "Refuse", why: `${file} exists and is not a regular file` }
  let text: string
  try {
    const fd = Fs.openSync(file, Fs.constants.O_RDONLY | Fs.constants.O_NOFOLLOW | Fs.constants.O_NONBLOCK)
    try {
      if (!Fs.fstatSync(fd).isFile()) return { _tag: "Refuse", why: `${file} exists and is not a regular file` }
      const buffer = Buffer.alloc(MAX_READ)
      text = buffer.toString("latin1", 0, Fs.readSync(fd, buffer, 0, MAX_READ, 0))
    } finally {
      Fs.closeSync(fd)
    }
  } catch (error) {
    if (code(error) === "ENOENT") return { _tag: "None" }
    return { _tag: "Refuse", why: `cannot read ${file}: ${describeError(error)}` }
  }
  if (text.trim() === "") return { _tag: "Stale" }
  const pid = /^\s*(\d{1,10})\s*$/.exec(text)
  if (pid === null) {
    return { _tag: "Refuse", why: `${file} exists and does not hold a pid; remove it or choose another file` }
  }
  const other = Number(pid[1])
  if (other !== process.pid && other > 0 && alive(other)) {
    return {
      _tag: "Refuse",
      why: `already running on PID ${other} (per ${file}); if that process is not prefork, remove the file`
    }
  }
  return { _tag: "Stale" }
}

/** Creates a new file with a random name beside `file` holding our pid; returns its path. */
const writeTemp = (file: string): string => {
  // Web Crypto's global, read here: only a prefork with a pid file loads it (node:crypto costs every start ~7 ms).
  const unique = Buffer.from(globalThis.crypto.getRandomValues(new Uint8Array(8))).toString("hex")
  const temp = Path.join(Path.dirname(file), `.${Path.basename(file)}.${unique}.tmp`)
  const fd = Fs.openSync(
    temp,
    Fs.constants.O_CREAT | Fs.constants.O_EXCL | Fs.constants.O_NOFOLLOW | Fs.constants.O_WRONLY,
    0o644
  )
  try {
    Fs.writeSync(fd, `${process.pid}\n`)
  } catch (error) {
    Fs.closeSync(fd)
    Fs.rmSync(temp, { force: true })
    throw error
  }
  Fs.closeSync(fd)
  return temp
}

/** The identity of the file written, to know at the end whether it is still ours. */
interface Written {
  readonly dev: number
  readonly ino: number
}

/** Puts our pid at `file` (see the module's description) and returns the identity of what was written. */
const place = (file: string): Written | InvalidOptions => {
  // Bounded: a pid file that keeps appearing and vanishing between the check and the move is refused.
  for (let attempt = 0; attempt < 3; attempt++) {
    const existing = inspect(file)
    if (existing._tag === "Refuse") return refuse(existing.why)
    let temp: string
    try {
      temp = writeTemp(file)
    } catch (error) {
      return refuse(`cannot write in ${Path.dirname(file)}: ${describeError(error)}`)
    }
    try {
      const stat = Fs.lstatSync(temp)
      if (existing._tag === "None") {
        try {
          // Exclusive: fails if a file appeared at the path since it was checked.
          Fs.linkSync(temp, file)
        } catch (error) {
          if (code(error) === "EEXIST") continue
          throw error
        }
      } else {
        Fs.renameSync(temp, file)
      }
      return { dev: stat.dev, ino: stat.ino }
    } catch (error) {
      return refuse(`cannot write ${file}: ${describeError(error)}`)
    } finally {
      Fs.rmSync(temp, { force: true })
    }
  }
  return refuse(`${file} keeps changing while prefork writes it; is another prefork starting?`)
}

/** Removes `file` if it is still the one written and still holds our pid. */
const remove = (file: string, written: Written): void => {
  try {
    const stat = Fs.lstatSync(file)
    if (!stat.isFile() || stat.dev !== written.dev || stat.ino !== written.ino) return
    const fd = Fs.openSync(file, Fs.constants.O_RDONLY | Fs.constants.O_NOFOLLOW | Fs.constants.O_NONBLOCK)
    let text: string
    try {
      const buffer = Buffer.alloc(MAX_READ)
      text = buffer.toString("latin1", 0, Fs.readSync(fd, buffer, 0, MAX_READ, 0))
    } finally {
      Fs.closeSync(fd)
    }
    if (text.trim() === String(process.pid)) Fs.unlinkSync(file)
  } catch {
    // Gone already, or no longer ours to remove.
  }
}

/**
 * Writes prefork's pid to `file` for the life of the scope and removes it
 * when the scope closes (if it is still the file written). A path that cannot
 * be trusted or written is an `InvalidOptions` for `pid-file`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const hold = (file: string): Effect.Effect<void, InvalidOptions, Scope.Scope> =>
  Effect.asVoid(
    Effect.acquireRelease(
      Effect.suspend(() => {
        const written = place(Path.resolve(file))
        return written instanceof InvalidOptions ? Effect.fail(written) : Effect.succeed(written)
      }),
      (written) => Effect.sync(() => remove(Path.resolve(file), written))
    )
  )
