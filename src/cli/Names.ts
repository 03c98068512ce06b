/**
 * The names of running preforks, as `docker compose` names its projects: each
 * prefork of a user has a name (`--name`, by default the program it runs:
 * `node server.js` is `server`), and its control socket is `<name>.sock` in
 * the user's private runtime directory (`RuntimeDir.defaultDir()`), so two
 * preforks of one user are two sockets, and `prefork ctl ls` finds them all
 * by listing that directory.
 *
 * Synchronous and free of Effect: `prefork ctl` uses it without loading a
 * runtime. Listing never follows a link: each entry is checked with `lstat`
 * (`RuntimeDir.checkSocket`), and what is not a socket of this user is
 * skipped and said.
 *
 * @since 0.1.0
 */
import { readdirSync } from "node:fs"
import * as Path from "node:path"
import * as RuntimeDir from "./RuntimeDir.ts"

/**
 * What a name may be: a letter or digit, then up to 63 letters, digits, `.`,
 * `_` or `-` (it becomes a file name, so no `/`, and it never starts with a
 * dot).
 *
 * @since 0.1.0
 * @category constants
 */
export const PATTERN: RegExp = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/

/**
 * The most sockets `prefork ctl ls` looks at in the directory; the rest are
 * counted and said, not asked.
 *
 * @since 0.1.0
 * @category constants
 */
export const MAX_LISTED = 256

/**
 * The most names tried after the default one is taken (`server-2` …
 * `server-100`): past that, prefork runs without a control socket and says so.
 *
 * @since 0.1.0
 * @category constants
 */
export const MAX_SUFFIX = 100

const SUFFIX = ".sock"

/**
 * Why `name` cannot be a name, or undefined when it can.
 *
 * @since 0.1.0
 * @category checks
 */
export const invalid = (name: string): string | undefined =>
  PATTERN.test(name)
    ? undefined
    : `a name is a letter or digit, then up to 63 letters, digits, '.', '_' or '-' (got ${JSON.stringify(name.slice(0, 80))})`

/** Interpreters whose name is their script's: the first argument that is not an option, or `-m module`. */
const INTERPRETERS = /^(node|nodejs|bun|deno|python[0-9.]*|pypy[0-9.]*|ruby|perl|php|sh|bash|dash|zsh|tsx|ts-node)$/

/** Options of those interpreters that take the next argument as their value (so it is not the script). */
const TAKES_VALUE = new Set(["-r", "--require", "--import", "--loader", "--experimental-loader", "-W", "-X", "-I"])

/** Options that run inline code: no script, the interpreter's own name is used. */
const INLINE = new Set(["-e", "--eval", "-p", "--print", "-c"])

/** `raw` made into a valid name: invalid characters become `-`, leading ones dropped, at most 64; `prefork` if nothing is left. */
const sanitize = (raw: string): string => {
  const cleaned = raw
    .replace(/[^A-Za-z0-9._-]/g, "-")
    .replace(/^[^A-Za-z0-9]+/, "")
    .slice(0, 64)
  return cleaned === "" ? "prefork" : cleaned
}

/** A file's name without its directory and its last extension: `src/server.js` → `server`. */
const stem = (file: string): string => {
  const base = Path.basename(file)
  const ext = Path.extname(base)
  return ext === "" || ext === base ? base : base.slice(0, -ext.length)
}

/**
 * The name a prefork running `command` gets without `--name`: the script's
 * name without its extension for an interpreter (`node server.js` →
 * `server`, `python -m app` → `app`, `deno run main.ts` → `main`), else the
 * program's own (`gunicorn app:app` → `gunicorn`). Always valid.
 *
 * @since 0.1.0
 * @category constructors
 */
export const defaultName = (command: ReadonlyArray<string>): string => {
  const [program = "prefork", ...args] = command
  const interpreter = stem(program)
  if (!INTERPRETERS.test(interpreter)) return sanitize(Path.basename(program))
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!
    if (INLINE.has(arg)) break
    if (arg === "-m" && args[i + 1] !== undefined) return sanitize(args[i + 1]!)
    if (TAKES_VALUE.has(arg)) i++
    else if ((interpreter === "bun" || interpreter === "deno") && arg === "run") continue
    else if (arg === "--") continue
    else if (!arg.startsWith("-")) return sanitize(stem(arg))
  }
  return sanitize(interpreter)
}

/**
 * The names tried, in order, when the default `name` may be taken: `name`,
 * `name-2`, … `name-{@link MAX_SUFFIX}` (shortened so each stays valid).
 *
 * @since 0.1.0
 * @category constructors
 */
export const candidates = (name: string): ReadonlyArray<string> => [
  name,
  ...Array.from({ length: MAX_SUFFIX - 1 }, (_, i) => {
    const suffix = `-${i + 2}`
    return `${name.slice(0, 64 - suffix.length)}${suffix}`
  })
]

/**
 * The control socket of the prefork called `name` in directory `dir`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const socketIn = (dir: string, name: string): string => Path.join(dir, `${name}${SUFFIX}`)

/**
 * The control socket of the prefork called `name` in this user's private
 * runtime directory (`RuntimeDir.defaultDir()`).
 *
 * @since 0.1.0
 * @category constructors
 */
export const socketPath = (name: string, env: NodeJS.ProcessEnv = process.env): string =>
  socketIn(RuntimeDir.defaultDir(env).dir, name)

/**
 * What is in the runtime directory: the sockets of this user, by name
 * (sorted), and every other `*.sock` entry with why it was skipped.
 *
 * @since 0.1.0
 * @category models
 */
export interface Listing {
  /** The checked directory, links resolved: where the sockets are. */
  readonly dir: string
  readonly sockets: ReadonlyArray<{ readonly name: string; readonly path: string }>
  readonly skipped: ReadonlyArray<{ readonly entry: string; readonly reason: string }>
  /** Sockets beyond {@link MAX_LISTED}, not listed. */
  readonly more: number
}

/**
 * Lists the control sockets in this user's runtime directory. The directory
 * must be the private one (`RuntimeDir.checkPrivate`); a missing one is an
 * empty listing. Each `*.sock` entry is `lstat`-ed, never followed: a link,
 * a file, another user's socket or an invalid name is skipped and said.
 *
 * @since 0.1.0
 * @category constructors
 */
export const list = (env: NodeJS.ProcessEnv = process.env): Listing | RuntimeDir.UntrustedPath => {
  const dir = RuntimeDir.privateDir({ create: false, env })
  if (dir instanceof RuntimeDir.UntrustedPath) return dir
  if (dir instanceof RuntimeDir.Missing)
    return { dir: RuntimeDir.defaultDir(env).dir, sockets: [], skipped: [], more: 0 }
  let entries: Array<string>
  try {
    entries = readdirSync(dir)
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === "ENOENT") return { dir, sockets: [], skipped: [], more: 0 }
    return new RuntimeDir.UntrustedPath({ path: dir, reason: `cannot list it (${code ?? String(error)})` })
  }
  const sockets: Array<{ name: string; path: string }> = []
  const skipped: Array<{ entry: string; reason: string }> = []
  let more = 0
  // Sorted by name (server before server-2), not by file name ("server-2.sock" sorts before "server.sock").
  const names = entries.filter((e) => e.endsWith(SUFFIX)).map((e) => e.slice(0, -SUFFIX.length))
  for (const name of names.sort()) {
    const entry = `${name}${SUFFIX}`
    const path = Path.join(dir, entry)
    const wrong = invalid(name)
    const problem = wrong === undefined ? RuntimeDir.checkSocket(path) : undefined
    if (wrong !== undefined) skipped.push({ entry, reason: "not a prefork name" })
    else if (problem instanceof RuntimeDir.UntrustedPath) skipped.push({ entry, reason: problem.reason })
    else if (problem instanceof RuntimeDir.Missing) continue
    else if (sockets.length >= MAX_LISTED) more++
    else sockets.push({ name, path })
  }
  return { dir, sockets, skipped, more }
}
