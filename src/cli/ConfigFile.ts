/**
 * The config file: `prefork.json` in the working directory, or the file
 * `--config` names (`--config off`: none). JSON only, never JavaScript: a
 * file found where prefork happens to start must not run code, least of all
 * as root. Its keys are the long flag names (`Options.options`), read by the
 * same parsers as the flags, and `command`; `$schema` is allowed for editors.
 *
 * prefork often runs as root, and the file may choose `--user` and the
 * command: it must be a regular file (a default-found one not a symbolic
 * link), owned by prefork's effective uid or root, writable by neither its
 * group nor others, and at most {@link MAX_BYTES}. Anything else is refused
 * with an error naming the file (exit 2); so is an unknown key (with the
 * closest known one) or a bad value (naming the key).
 *
 * @since 0.1.0
 */
import * as Fs from "node:fs"
import * as Path from "node:path"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Result from "effect/Result"
import { InvalidOptions } from "../Errors.ts"
import * as Options from "./Options.ts"

/**
 * The largest config file read: 1 MiB.
 *
 * @since 0.1.0
 * @category constants
 */
export const MAX_BYTES = 1024 * 1024

/**
 * A config file read and validated.
 *
 * @since 0.1.0
 * @category models
 */
export interface Loaded {
  /** Its absolute path, for the log. */
  readonly path: string
  readonly values: Options.FromFile
}

const octal = (mode: number) => `0${(mode & 0o7777).toString(8)}`

/** Why the opened file cannot be trusted, or `undefined`. */
const untrusted = (stats: Fs.Stats, euid: number): string | undefined => {
  if (!stats.isFile()) return "it is not a regular file"
  if (stats.uid !== euid && stats.uid !== 0) {
    return `it belongs to uid ${stats.uid}, neither to prefork's uid ${euid} nor to root`
  }
  if ((stats.mode & 0o022) !== 0) {
    return `it is writable by ${(stats.mode & 0o002) !== 0 ? "others" : "its group"} (mode ${octal(stats.mode)}); chmod go-w it`
  }
  if (stats.size > MAX_BYTES) return `it is ${stats.size} bytes, more than the ${MAX_BYTES} allowed`
  return undefined
}

/** Reads the file, or says why not; `undefined` when a default-found file does not exist. */
const read = (path: string, found: boolean): Result.Result<string | undefined, string> => {
  let fd: number
  try {
    // O_NONBLOCK: a FIFO put there opens without waiting for a writer (and is then refused as not a regular file).
    fd = Fs.openSync(path, Fs.constants.O_RDONLY | Fs.constants.O_NONBLOCK | (found ? Fs.constants.O_NOFOLLOW : 0))
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (found && code === "ENOENT") return Result.succeed(undefined)
    if (code === "ELOOP") return Result.fail("it is a symbolic link (a config file found by default must not be)")
    return Result.fail(code === "ENOENT" ? "no such file" : `cannot open it (${code ?? String(error)})`)
  }
  try {
    const why = untrusted(Fs.fstatSync(fd), process.geteuid?.() ?? 0)
    if (why !== undefined) return Result.fail(why)
    // Read at most one byte more than allowed: a file that grew since fstat is still refused.
    const buffer = Buffer.alloc(MAX_BYTES + 1)
    let length = 0
    for (let i = 0; i < 1024 && length < buffer.length; i++) {
      const n = Fs.readSync(fd, buffer, length, buffer.length - length, null)
      if (n === 0) break
      length += n
    }
    if (length > MAX_BYTES) return Result.fail(`it is more than the ${MAX_BYTES} bytes allowed`)
    return Result.succeed(buffer.subarray(0, length).toString("utf8"))
  } catch (error) {
    return Result.fail(`cannot read it (${(error as NodeJS.ErrnoException).code ?? String(error)})`)
  } finally {
    Fs.closeSync(fd)
  }
}

/** JSON.parse's complaint, with the line and column (Node 22 gives only the position). */
const syntaxError = (text: string, error: unknown): string => {
  const message = error instanceof Error ? error.message : String(error)
  const position = /at position (\d+)(?!\d| \(line)/.exec(message)
  if (position === null) return `invalid JSON: ${message}`
  const before = text.slice(0, Number(position[1]))
  const line = before.split("\n").length
  return `invalid JSON: ${message} (line ${line} column ${before.length - before.lastIndexOf("\n")})`
}

/** The edit distance between two keys (for "did you mean"). */
const distance = (a: string, b: string): number => {
  let row = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const next = [i]
    for (let j = 1; j <= b.length; j++) {
      next[j] = Math.min(row[j]! + 1, next[j - 1]! + 1, row[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1))
    }
    row = next
  }
  return row[b.length]!
}

const KEYS: ReadonlyArray<string> = ["command", ...Options.byName.keys()]

/** The known key closest to `key`, if it is close enough to be a typo. */
const closest = (key: string): string | undefined => {
  const bare = key.replace(/^-+/, "")
  if (KEYS.includes(bare)) return bare
  const [best] = KEYS.map((k) => [k, distance(bare, k)] as const).sort((a, b) => a[1] - b[1])
  return best !== undefined && best[1] <= Math.max(2, Math.floor(bare.length / 3)) ? best[0] : undefined
}

/**
 * Validates a parsed config file: every key known, every value as its flag
 * would take it. Errors are as the user reads them, without the file's name.
 *
 * @since 0.1.0
 * @category parsing
 */
export const decode = (json: unknown): Result.Result<Options.FromFile, string> => {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    return Result.fail('expected an object of options ({ "processes": 4, "command": ["node", "app.js"] })')
  }
  const values: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(json)) {
    if (key === "$schema") {
      if (typeof value !== "string") return Result.fail(`"$schema": expected a string`)
      continue
    }
    if (key === "command") {
      if (!Array.isArray(value) || value.length === 0 || !value.every((v) => typeof v === "string")) {
        return Result.fail(`"command": expected a list of strings, the program first, such as ["node", "app.js"]`)
      }
      values["command"] = value
      continue
    }
    const option = Options.byName.get(key)
    if (option === undefined) {
      const near = closest(key)
      return Result.fail(`unknown key ${JSON.stringify(key)}${near === undefined ? "" : ` (did you mean "${near}"?)`}`)
    }
    const [field, opt] = option
    const parsed = opt.fromJson(value)
    if (Result.isFailure(parsed)) return Result.fail(`${JSON.stringify(key)}: ${parsed.failure}`)
    values[field] = parsed.success
  }
  return Result.succeed(values as Options.FromFile)
}

/**
 * Finds and reads the config file: `flag` is `--config` (`off` for none;
 * absent: {@link Options.CONFIG_NAME} in `cwd` if it exists). Fails with
 * `InvalidOptions` naming the file and, for a bad value, the key.
 *
 * @since 0.1.0
 * @category loading
 */
export const load = (flag: Option.Option<string>, cwd: string): Effect.Effect<Option.Option<Loaded>, InvalidOptions> =>
  Effect.suspend(() => {
    if (Option.isSome(flag) && flag.value === "off") return Effect.succeedNone
    const found = Option.isNone(flag)
    const shown = found ? Options.CONFIG_NAME : flag.value
    const path = Path.resolve(cwd, shown)
    const fail = (message: string) =>
      Effect.fail(new InvalidOptions({ field: "config", message: `${shown}: ${message}` }))
    const text = read(path, found)
    if (Result.isFailure(text)) return fail(text.failure)
    if (text.success === undefined) return Effect.succeedNone
    let json: unknown
    try {
      json = JSON.parse(text.success)
    } catch (error) {
      return fail(syntaxError(text.success, error))
    }
    const values = decode(json)
    if (Result.isFailure(values)) return fail(values.failure)
    return Effect.succeedSome({ path, values: values.success })
  })
