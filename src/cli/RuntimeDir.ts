/**
 * Where the control socket lives, and whether a place can be trusted with
 * it, as ssh-agent and tmux decide: prefork often runs as root, and another
 * local user who could put a directory, a link or a socket where prefork
 * looks could serve `prefork ctl` fake answers or take the socket.
 *
 * - The default directory is `$XDG_RUNTIME_DIR/prefork` when that variable
 *   holds an absolute path, else `prefork-<euid>` in `$TMPDIR` (an absolute
 *   path) or `/tmp`. prefork creates it with mode 0700 (a plain `mkdir`, which
 *   fails if anything is there); one that exists is used only if `lstat` says
 *   it is a directory, not a link, owned by this euid, of mode exactly 0700.
 * - The place it is in (the base), and the directory of a socket given with
 *   `--control`, are taken as they are (links followed) and never created or
 *   changed: each directory on the real path must belong to this euid or to
 *   root, and must not be writable by group or others unless it is sticky
 *   (`/tmp`).
 * - A socket is trusted if `lstat` says it is a socket owned by this euid.
 *
 * The same checks serve `prefork` (before it binds or removes a stale
 * socket) and `prefork ctl` (before it connects). Synchronous: they run once,
 * at start, and `prefork ctl` loads no Effect runtime for them.
 *
 * @since 0.1.0
 */
import { lstatSync, mkdirSync, type Stats } from "node:fs"
import * as Path from "node:path"
import * as Data from "effect/Data"
import * as Trust from "../node/internal/trust.ts"

/**
 * A path prefork will not use: a directory or socket another user could
 * control (`reason` says why). Nothing was created, changed or removed.
 *
 * @since 0.1.0
 * @category errors
 */
export class UntrustedPath extends Data.TaggedError("UntrustedPath")<{
  readonly path: string
  readonly reason: string
}> {
  override get message(): string {
    return `refusing ${this.path}: ${this.reason}`
  }
}

/**
 * A path that does not exist (yet): for `prefork ctl`, no prefork there.
 *
 * @since 0.1.0
 * @category errors
 */
export class Missing extends Data.TaggedError("Missing")<{
  readonly path: string
}> {
  override get message(): string {
    return `${this.path} does not exist`
  }
}

/** The effective uid: the owner prefork's files get, and the only owner it trusts besides root. */
const euid = (): number => process.geteuid?.() ?? 0

const octal = (mode: number) => `0${(mode & 0o7777).toString(8)}`

const isAbsolute = (value: string | undefined): value is string =>
  value !== undefined && value !== "" && Path.isAbsolute(value)

/** The name of the default socket in its directory. */
const SOCKET = "prefork.sock"

/**
 * The default directory of the control socket, and the place it is made in.
 *
 * @since 0.1.0
 * @category models
 */
export interface DefaultDir {
  /** The existing directory the default one is made in: `$XDG_RUNTIME_DIR`, `$TMPDIR` or `/tmp`. */
  readonly base: string
  /** `<base>/prefork` or `<base>/prefork-<euid>`. */
  readonly dir: string
}

/**
 * The default directory for this environment: `$XDG_RUNTIME_DIR/prefork`,
 * else `prefork-<euid>` in `$TMPDIR` or `/tmp`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const defaultDir = (env: NodeJS.ProcessEnv = process.env): DefaultDir => {
  const xdg = env["XDG_RUNTIME_DIR"]
  if (isAbsolute(xdg)) return { base: xdg, dir: Path.join(xdg, "prefork") }
  const tmp = env["TMPDIR"]
  const base = isAbsolute(tmp) ? tmp : "/tmp"
  return { base, dir: Path.join(base, `prefork-${euid()}`) }
}

/**
 * Where `prefork` listens and `prefork ctl` connects unless told otherwise.
 *
 * @since 0.1.0
 * @category constructors
 */
export const defaultPath = (env: NodeJS.ProcessEnv = process.env): string => Path.join(defaultDir(env).dir, SOCKET)

const isStats = (value: Stats | Missing | UntrustedPath): value is Stats =>
  !(value instanceof Missing) && !(value instanceof UntrustedPath)

const lstat = (path: string): Stats | Missing | UntrustedPath => {
  try {
    return lstatSync(path)
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    return code === "ENOENT" || code === "ENOTDIR"
      ? new Missing({ path })
      : new UntrustedPath({ path, reason: `cannot inspect it (${code ?? String(error)})` })
  }
}

/**
 * The real path of an existing directory that may hold a socket of ours:
 * every directory on its real path (links resolved) belongs to this euid or
 * to root and is not writable by group or others unless sticky. Nothing is
 * created or changed.
 *
 * @since 0.1.0
 * @category checks
 */
export const trustedParent = (dir: string): string | Missing | UntrustedPath => {
  const verdict = Trust.directory(dir, [euid()])
  switch (verdict._tag) {
    case "Trusted":
      return verdict.real
    case "Missing":
      return new Missing({ path: dir })
    case "Untrusted":
      return new UntrustedPath({
        path: dir,
        reason: verdict.at === verdict.real ? verdict.reason : `${verdict.at}: ${verdict.reason}`
      })
  }
}

/** Why an existing directory is not our private one, or undefined: a directory, not a link, ours, mode 0700. */
const privateProblem = (stats: Stats): string | undefined => {
  if (stats.isSymbolicLink()) return "it is a symbolic link"
  if (!stats.isDirectory()) return "it is not a directory"
  if (stats.uid !== euid()) return `it belongs to uid ${stats.uid}, not to uid ${euid()}`
  if ((stats.mode & 0o7777) !== 0o700) return `its mode is ${octal(stats.mode)}, not 0700`
  return undefined
}

/**
 * Checks an existing private directory: a directory, not a link, owned by
 * this euid, mode exactly 0700. Nothing is changed.
 *
 * @since 0.1.0
 * @category checks
 */
export const checkPrivate = (dir: string): void | Missing | UntrustedPath => {
  const stats = lstat(dir)
  if (!isStats(stats)) return stats
  const problem = privateProblem(stats)
  return problem === undefined ? undefined : new UntrustedPath({ path: dir, reason: problem })
}

/**
 * Checks a socket: `lstat` says it is a socket owned by this euid. Nothing is
 * changed.
 *
 * @since 0.1.0
 * @category checks
 */
export const checkSocket = (path: string): void | Missing | UntrustedPath => {
  const stats = lstat(path)
  if (!isStats(stats)) return stats
  if (stats.isSymbolicLink()) return new UntrustedPath({ path, reason: "it is a symbolic link, not a socket" })
  if (!stats.isSocket()) return new UntrustedPath({ path, reason: "it is not a socket" })
  if (stats.uid !== euid()) {
    return new UntrustedPath({ path, reason: `the socket belongs to uid ${stats.uid}, not to uid ${euid()}` })
  }
  return undefined
}

/**
 * This user's private directory for control sockets (the default one), its
 * links above resolved: made by {@link ensurePrivate} when `create` (prefork
 * does, `prefork ctl` does not), or checked by {@link checkPrivate}, in a
 * trusted base.
 *
 * @since 0.1.0
 * @category checks
 */
export const privateDir = (options: {
  readonly create: boolean
  readonly env?: NodeJS.ProcessEnv | undefined
}): string | Missing | UntrustedPath => {
  const dflt = defaultDir(options.env)
  const base = trustedParent(dflt.base)
  if (typeof base !== "string") return base
  const dir = Path.join(base, Path.basename(dflt.dir))
  const made = options.create ? ensurePrivate(dir) : checkPrivate(dir)
  return made === undefined ? dir : made
}

/**
 * Where a socket may be: for one in the default directory (`prefork.sock`,
 * `<name>.sock`), the {@link privateDir}; for any other, a
 * {@link trustedParent}. Returns the socket's path with its directory's
 * links resolved, the path to bind or connect to. `create`: make the default
 * directory if it is missing (prefork does, `prefork ctl` does not).
 *
 * @since 0.1.0
 * @category checks
 */
export const resolve = (
  path: string,
  options: { readonly create: boolean; readonly env?: NodeJS.ProcessEnv | undefined }
): string | Missing | UntrustedPath => {
  const absolute = Path.resolve(path)
  if (Path.dirname(absolute) === defaultDir(options.env).dir) {
    const dir = privateDir(options)
    return typeof dir === "string" ? Path.join(dir, Path.basename(absolute)) : dir
  }
  const parent = trustedParent(Path.dirname(absolute))
  return typeof parent === "string" ? Path.join(parent, Path.basename(absolute)) : parent
}

/**
 * Makes `dir` (in a trusted parent) with mode 0700, or checks the one there
 * with {@link checkPrivate}: `mkdir` without `recursive` fails if anything
 * (a directory, a link, a file) is in the way, and that is then what is
 * checked. The umask is 077 for the `mkdir` so the mode is exact.
 *
 * @since 0.1.0
 * @category constructors
 */
export const ensurePrivate = (dir: string): void | Missing | UntrustedPath => {
  const umask = process.umask(0o077)
  try {
    mkdirSync(dir, { mode: 0o700 })
    return undefined
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === "EEXIST") return checkPrivate(dir)
    if (code === "ENOENT") return new Missing({ path: Path.dirname(dir) })
    return new UntrustedPath({ path: dir, reason: `cannot create it (${code ?? String(error)})` })
  } finally {
    process.umask(umask)
  }
}
