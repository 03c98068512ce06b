/**
 * Process groups: a worker is the leader of its own group, and the group is
 * the worker (systemd's `KillMode=control-group`). These are the two things
 * the stop needs: signal every member of a group, and know whether any member
 * still lives, including after the leader has been reaped.
 *
 * Why signaling `-pgid` after the leader's reap is safe: a process group id
 * is the pid of the process that created the group, and the kernel does not
 * hand that pid to a new process while any process (even a zombie) still
 * belongs to the group. So while the group is non-empty, `-pgid` reaches only
 * the worker's own descendants. The residual race is once the group is
 * empty: between the check that finds a member and the signal, the last
 * member may exit and be reaped, and the pid be reused by a new process that
 * makes itself a group leader (a `setsid` or `setpgid(0, 0)` right after its
 * fork) — microseconds, against a pid space that must wrap around first.
 */
import { readdirSync, readFileSync } from "node:fs"

/**
 * Sends `signal` to every member of the group `pgid`. Returns `false` when
 * the group has no member (`ESRCH`); a member the primary may not signal
 * (`EPERM`) counts as sent.
 *
 * @internal
 */
export const signal = (pgid: number, signal: NodeJS.Signals | 0): boolean => {
  try {
    process.kill(-pgid, signal)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM"
  }
}

/**
 * Whether any process of the group `pgid` still runs.
 *
 * `kill(-pgid, 0)` succeeds while any member exists, zombies included, and
 * orphaned members that were killed stay zombies until init reaps them, which
 * can take seconds (measured here: ~1.5 s) or forever (a container whose pid 1
 * never reaps). So where `/proc` exists a positive answer is confirmed there:
 * only a member that is not a zombie counts.
 *
 * @internal
 */
export const hasLiveMember = (pgid: number): boolean => {
  if (!signal(pgid, 0)) return false
  const members = liveMembersFromProc(pgid)
  return members === undefined || members > 0
}

/**
 * The number of non-zombie processes of group `pgid` according to `/proc`,
 * or `undefined` where `/proc` cannot be read (macOS).
 */
const liveMembersFromProc = (pgid: number): number | undefined => {
  let entries: Array<string>
  try {
    entries = readdirSync("/proc")
  } catch {
    return undefined
  }
  let live = 0
  for (const entry of entries) {
    const first = entry.charCodeAt(0)
    if (first < 48 || first > 57) continue
    let stat: string
    try {
      stat = readFileSync(`/proc/${entry}/stat`, "latin1")
    } catch {
      continue // gone meanwhile
    }
    // "pid (comm) state ppid pgrp …": comm may contain spaces and parentheses, so parse after the last ")".
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ", 3)
    if (Number(fields[2]) === pgid && fields[0] !== "Z" && fields[0] !== "X") live++
  }
  return live
}
