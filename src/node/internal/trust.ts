/**
 * Whether a directory can be trusted with a file that no one else may swap:
 * a socket, a pid file's neighbours. Every directory on its real path (links
 * resolved), from `/` down, must belong to one of the trusted uids or to
 * root, and must not be writable by group or others unless it is sticky
 * (`/tmp`): otherwise someone else could rename or replace what is in it.
 * Nothing is created or changed. One rule for the control socket's directory
 * (`cli/RuntimeDir.ts`) and a `--listen unix:` socket's (`sockets.ts`).
 */
import { lstatSync, realpathSync, type Stats } from "node:fs"
import * as Path from "node:path"

/** @internal */
export type Verdict =
  | { readonly _tag: "Trusted"; readonly real: string }
  | { readonly _tag: "Missing"; readonly code: string }
  /** `at` is the directory at fault (the real path itself, or one above it). */
  | { readonly _tag: "Untrusted"; readonly at: string; readonly real: string; readonly reason: string }

const octal = (mode: number) => `0${(mode & 0o7777).toString(8)}`

/**
 * Why one directory cannot be trusted, or `undefined`. `trusted` are the uids
 * besides root, named in this order in the message.
 *
 * @internal
 */
export const problem = (stats: Stats, trusted: ReadonlyArray<number>): string | undefined => {
  if (!stats.isDirectory()) return "it is not a directory"
  if (stats.uid !== 0 && !trusted.includes(stats.uid)) {
    return `it belongs to uid ${stats.uid}, neither to ${trusted.map((uid) => `uid ${uid}`).join(", ")} nor to root`
  }
  if ((stats.mode & 0o022) !== 0 && (stats.mode & 0o1000) === 0) {
    return `it is writable by ${(stats.mode & 0o002) !== 0 ? "others" : "its group"} (mode ${octal(stats.mode)}) and not sticky`
  }
  return undefined
}

/**
 * Checks `dir` and every directory above its real path.
 *
 * @internal
 */
export const directory = (dir: string, trusted: ReadonlyArray<number>): Verdict => {
  let real: string
  try {
    real = realpathSync(dir)
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? String(error)
    return code === "ENOENT" || code === "ENOTDIR"
      ? { _tag: "Missing", code }
      : { _tag: "Untrusted", at: dir, real: dir, reason: `cannot resolve it (${code})` }
  }
  const parts = real.split(Path.sep).filter((part) => part !== "")
  for (let i = 0; i <= parts.length; i++) {
    const at = Path.sep + parts.slice(0, i).join(Path.sep)
    let stats: Stats
    try {
      stats = lstatSync(at)
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? String(error)
      return { _tag: "Untrusted", at, real, reason: `cannot inspect it (${code})` }
    }
    const why = problem(stats, trusted)
    if (why !== undefined) return { _tag: "Untrusted", at, real, reason: why }
  }
  return { _tag: "Trusted", real }
}
