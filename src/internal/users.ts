/**
 * Which user and group the workers run as (`user`, `group`): names or ids,
 * resolved once when the supervisor starts, the way `id` and `getent` see
 * them (so users from LDAP or any NSS source count, not only /etc/passwd).
 * Dropping privileges needs root: a supervisor that is not root may only run
 * workers as itself.
 *
 * Dropping privileges is all or nothing:
 * - a user (by name, or a uid with a passwd entry) brings its primary group,
 *   unless `group` is given;
 * - a uid without a passwd entry has no primary group: `group` is then
 *   required, or the worker would keep the supervisor's group (root's gid 0);
 * - a worker never runs with a uid other than 0 and gid 0 unless gid 0 was
 *   asked for (`group: 0` or `root`): a user whose primary group is 0 needs
 *   an explicit `group`;
 * - supplementary groups are always cleared when either is set: libuv calls
 *   `setgroups(0, NULL)` in the child before its `exec` whenever a uid or
 *   gid is given to `spawn`/`fork` (so `group` alone, as root, clears them too).
 */
import { execFileSync } from "node:child_process"

/** @internal */
export interface Identity {
  readonly uid: number | undefined
  readonly gid: number | undefined
}

const lookup = (file: string, args: ReadonlyArray<string>): string | undefined => {
  try {
    return execFileSync(file, [...args], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
      timeout: 5000
    }).trim()
  } catch {
    return undefined
  }
}

const isId = (value: string | number): boolean =>
  typeof value === "number" ? Number.isInteger(value) && value >= 0 : /^\d+$/.test(value)

/**
 * Resolves `user` (its primary group too, unless `group` is given) and
 * `group`; an error message for one that does not exist or cannot be taken.
 *
 * @internal
 */
export const resolve = (
  user: string | number | undefined,
  group: string | number | undefined
): Identity | { readonly field: "user" | "group"; readonly message: string } => {
  let uid: number | undefined
  let gid: number | undefined
  if (user !== undefined) {
    const found = isId(user) ? String(user) : lookup("id", ["-u", "--", String(user)])
    if (found === undefined || !/^\d+$/.test(found)) return { field: "user", message: `no such user: ${String(user)}` }
    uid = Number(found)
    // The user's own primary group, as login does, unless a group is given (a uid without a passwd entry has none).
    if (group === undefined) {
      const primary = lookup("id", ["-g", "--", String(user)])
      if (primary !== undefined && /^\d+$/.test(primary)) gid = Number(primary)
    }
  }
  if (group !== undefined) {
    if (isId(group)) gid = Number(group)
    else {
      const entry = lookup("getent", ["group", "--", String(group)])
      const id = entry?.split(":")[2]
      if (id === undefined || !/^\d+$/.test(id)) return { field: "group", message: `no such group: ${String(group)}` }
      gid = Number(id)
    }
  }
  const myUid = process.getuid?.()
  const myGid = process.getgid?.()
  const changes = (uid !== undefined && uid !== myUid) || (gid !== undefined && gid !== myGid)
  if (changes && myUid !== 0) {
    return {
      field: uid !== undefined && uid !== myUid ? "user" : "group",
      message: `running workers as ${user !== undefined ? `user ${String(user)}` : `group ${String(group)}`} needs root (this supervisor runs as uid ${myUid}): start it as root, or leave user and group out`
    }
  }
  if (uid !== undefined && uid !== myUid && gid === undefined) {
    return {
      field: "user",
      message: `user ${String(user)} has no passwd entry, so no primary group: give a group too (--group), or its workers would keep this supervisor's group (gid ${myGid})`
    }
  }
  if (uid !== undefined && uid !== 0 && uid !== myUid && gid === 0 && group === undefined) {
    return {
      field: "user",
      message: `user ${String(user)}'s primary group is root's (gid 0): give a group explicitly (--group), 0 only if that is really meant`
    }
  }
  return { uid, gid }
}
