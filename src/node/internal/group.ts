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
 * Sends `signal` to every member of the group `pgid` that the primary may
 * signal: `"sent"` if it reached one, `"none"` if the group has no member
 * (`ESRCH`), `"denied"` if every member belongs to another user (`EPERM`: a
 * setuid program). A pgid below 2 is refused (`"none"`): `kill(-1)` would
 * signal every process the primary may signal.
 *
 * @internal
 */
export const signal = (pgid: number, signal: NodeJS.Signals | 0): "sent" | "none" | "denied" => {
  if (!Number.isSafeInteger(pgid) || pgid < 2) return "none"
  try {
    process.kill(-pgid, signal)
    return "sent"
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM" ? "denied" : "none"
  }
}

/**
 * Tells whether any process of a group still runs.
 *
 * `kill(-pgid, 0)` succeeds while any member exists, zombies included, and
 * orphaned members that were killed stay zombies until init reaps them, which
 * can take seconds (measured here: ~1.5 s) or forever (a container whose pid 1
 * never reaps). So where `/proc` exists a positive answer is confirmed there:
 * only a member that is not a zombie counts. A full scan of `/proc` costs
 * about 3 ms with 100 processes, so the members it found are remembered and
 * looked at first; the scan is repeated only when none of them is left
 * (a member may have forked others meanwhile).
 *
 * Members the primary may not signal (another user's: a setuid program) do
 * not count: they could never be stopped, and waiting for them would make
 * the stop wait forever.
 *
 * @internal
 */
export const liveness = (pgid: number): (() => boolean) => {
  let known: Array<number> = []
  return () => {
    if (signal(pgid, 0) !== "sent") {
      known = []
      return false
    }
    known = known.filter((pid) => isLiveMember(pid, pgid))
    if (known.length > 0) return true
    const scanned = liveMembersFromProc(pgid)
    if (scanned === undefined) return true
    known = scanned
    return known.length > 0
  }
}

/** "pid (comm) state ppid pgrp …": comm may hold spaces and parentheses, so the fields are read after the last ")". */
const statFields = (pid: number | string): Array<string> | undefined => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "latin1")
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ", 3)
  } catch {
    return undefined // gone meanwhile
  }
}

const isLiveMember = (pid: number | string, pgid: number): boolean => {
  const fields = statFields(pid)
  if (fields === undefined || Number(fields[2]) !== pgid || fields[0] === "Z" || fields[0] === "X") return false
  try {
    process.kill(Number(pid), 0)
    return true
  } catch {
    return false // gone meanwhile, or another user's
  }
}

/**
 * The non-zombie processes of group `pgid` according to `/proc`, or
 * `undefined` where `/proc` cannot be read (macOS).
 */
const liveMembersFromProc = (pgid: number): Array<number> | undefined => {
  let entries: Array<string>
  try {
    entries = readdirSync("/proc")
  } catch {
    return undefined
  }
  const live: Array<number> = []
  for (const entry of entries) {
    const first = entry.charCodeAt(0)
    if (first < 48 || first > 57) continue
    if (isLiveMember(entry, pgid)) live.push(Number(entry))
  }
  return live
}
