/**
 * The resident memory of a worker: the sum of the resident set sizes of the
 * live members of its process group (a worker is its whole group), or of
 * one process for a worker without a group of its own.
 *
 * On Linux it is read from `/proc/<pid>/stat` (`pgrp` and `rss`, in pages of
 * the size the kernel gives in `/proc/self/auxv`). Reading that file for
 * every process is what costs: measured here, ~5.5 ms for a machine with
 * ~300 processes (an open, a read and a close each; the directory listing
 * itself is ~0.2 ms), all of it on the primary's event loop. So the
 * processes' groups are remembered, for every group at once, and a sample
 * reads the `stat` of only the pids that are new since the last listing and
 * of the group's known members (whose group is checked again): ~0.3 ms for a
 * small group on the same machine. What the memory cannot see — a pid
 * reused by a new member between two samples, which needs the pid space to
 * wrap around, or a process moving into the group with `setpgid` — is
 * bounded by looking at every process again at least every
 * {@link FULL_SCAN_EVERY}.
 *
 * Elsewhere (macOS) it runs `ps -A -o pgid= -o stat= -o rss=` (kibibytes), off the
 * event loop. (`ps -g` does not select a process group everywhere: POSIX
 * makes it a list of session leaders, and procps a list of sessions or
 * groups by name.)
 */
import { execFile } from "node:child_process"
import { closeSync, existsSync, openSync, readdirSync, readFileSync, readSync } from "node:fs"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"

/** At least this often, in milliseconds, a sample reads the `stat` of every process (see the module's comment). */
export const FULL_SCAN_EVERY = 30_000

/** `AT_PAGESZ` in the auxiliary vector (`<elf.h>`). */
const AT_PAGESZ = 6n

const isPageSize = (n: number): boolean => Number.isSafeInteger(n) && n >= 1024 && (n & (n - 1)) === 0

/**
 * The kernel's page size: `AT_PAGESZ` from this process's auxiliary vector
 * (pairs of native words), else the ratio of Node's resident set size
 * (libuv multiplies the pages of `/proc/self/stat` by `getpagesize()`) to
 * those pages, else 4096.
 */
const findPageSize = (): number => {
  try {
    const auxv = readFileSync("/proc/self/auxv")
    for (const width of [8, 4]) {
      for (let at = 0; at + 2 * width <= auxv.length; at += 2 * width) {
        const key = width === 8 ? auxv.readBigUInt64LE(at) : BigInt(auxv.readUInt32LE(at))
        if (key === 0n) break
        if (key !== AT_PAGESZ) continue
        const value = Number(width === 8 ? auxv.readBigUInt64LE(at + width) : auxv.readUInt32LE(at + width))
        if (isPageSize(value)) return value
      }
    }
  } catch {
    // no auxv: try the next way
  }
  for (let attempt = 0; attempt < 5; attempt++) {
    const before = statOf("self")
    const bytes = process.memoryUsage.rss()
    const after = statOf("self")
    if (before === undefined || after === undefined || before.rss !== after.rss || before.rss === 0) continue
    const size = bytes / before.rss
    if (isPageSize(size)) return size
  }
  return 4096
}

let pageSize: number | undefined
let hasProc: boolean | undefined

/** `/proc/<pid>/stat` fits in this (52 numbers and a 16-byte name). */
const buffer = Buffer.allocUnsafe(2048)

interface Stat {
  readonly pgrp: number
  readonly rss: number
  readonly zombie: boolean
}

/**
 * The group, pages and state of a process from `/proc/<pid>/stat`, or
 * `undefined` when it is gone. The name (field 2) may hold spaces and
 * parentheses: the fields are counted after its last `)`.
 */
const statOf = (pid: number | string): Stat | undefined => {
  let fd: number
  try {
    fd = openSync(`/proc/${pid}/stat`, "r")
  } catch {
    return undefined
  }
  try {
    const text = buffer.toString("latin1", 0, readSync(fd, buffer, 0, buffer.length, 0))
    // state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime priority
    // nice num_threads itrealvalue starttime vsize rss
    const fields = text.slice(text.lastIndexOf(")") + 2).split(" ", 22)
    const state = fields[0]
    return { pgrp: Number(fields[2]), rss: Number(fields[21]), zombie: state === "Z" || state === "X" }
  } catch {
    return undefined
  } finally {
    closeSync(fd)
  }
}

/** The group of every process seen in the last listing of `/proc`: one map for all the workers of this primary. */
let groups = new Map<number, number>()
let lastFullScan = Number.NEGATIVE_INFINITY

/**
 * The resident bytes of the live members of group `pgid` from `/proc`, or
 * `undefined` where `/proc` cannot be listed. `now` is the current time in
 * milliseconds.
 */
const groupFromProc = (pgid: number, now: number): Option.Option<number> | undefined => {
  let entries: Array<string>
  try {
    entries = readdirSync("/proc")
  } catch {
    return undefined
  }
  pageSize ??= findPageSize()
  const full = now - lastFullScan >= FULL_SCAN_EVERY || now < lastFullScan
  if (full) lastFullScan = now
  const seen = new Map<number, number>()
  let pages = 0
  let members = 0
  for (const entry of entries) {
    const first = entry.charCodeAt(0)
    if (first < 48 || first > 57) continue
    const pid = Number(entry)
    const known = groups.get(pid)
    if (!full && known !== undefined && known !== pgid) {
      seen.set(pid, known)
      continue
    }
    const stat = statOf(pid)
    if (stat === undefined) continue
    seen.set(pid, stat.pgrp)
    if (stat.pgrp !== pgid || stat.zombie) continue
    members++
    pages += stat.rss
  }
  groups = seen
  return members === 0 ? Option.none() : Option.some(pages * pageSize)
}

/** The resident bytes of one process from `/proc`, or `undefined` where there is no `/proc`. */
const processFromProc = (pid: number): Option.Option<number> | undefined => {
  hasProc ??= existsSync("/proc/self/stat")
  if (!hasProc) return undefined
  pageSize ??= findPageSize()
  const stat = statOf(pid)
  return stat === undefined || stat.zombie ? Option.none() : Option.some(stat.rss * pageSize)
}

/**
 * Sums `ps`'s `rss` (KiB) over the lines whose first column `matches` and
 * whose state is not a zombie's; none if no line does.
 */
const fromPs = (args: ReadonlyArray<string>, matches: (id: number) => boolean): Effect.Effect<Option.Option<number>> =>
  Effect.callback<Option.Option<number>>((resume) => {
    execFile("ps", args, { timeout: 5_000, maxBuffer: 4 << 20, encoding: "latin1" }, (error, stdout) => {
      let kib = 0
      let members = 0
      for (const line of error === null ? stdout.split("\n") : []) {
        const [id, state, rss] = line.trim().split(/\s+/)
        if (id === undefined || state === undefined || rss === undefined) continue
        if (!matches(Number(id)) || state.startsWith("Z")) continue
        members++
        kib += Number(rss) || 0
      }
      resume(Effect.succeed(members === 0 ? Option.none() : Option.some(kib * 1024)))
    })
  })

/**
 * The resident memory of the live members of process group `pgid`, in
 * bytes; none when it has none. `now`: the current time in milliseconds.
 *
 * @internal
 */
export const ofGroup = (pgid: number, now: number): Effect.Effect<Option.Option<number>> =>
  Effect.suspend(() => {
    const sampled = groupFromProc(pgid, now)
    return sampled !== undefined
      ? Effect.succeed(sampled)
      : fromPs(["-A", "-o", "pgid=", "-o", "stat=", "-o", "rss="], (id) => id === pgid)
  })

/**
 * The resident memory of one process, in bytes; none when it is gone.
 *
 * @internal
 */
export const ofProcess = (pid: number): Effect.Effect<Option.Option<number>> =>
  Effect.suspend(() => {
    const sampled = processFromProc(pid)
    return sampled !== undefined
      ? Effect.succeed(sampled)
      : fromPs(["-o", "pid=", "-o", "stat=", "-o", "rss=", "-p", String(pid)], (id) => id === pid)
  })
