/**
 * How many workers "one per CPU" means in a container: the CPUs this process
 * may run on (its affinity mask: `os.availableParallelism()`), capped by the
 * CPU quota of its cgroup, rounded up (Go's automaxprocs and the JVM's
 * container support do the same). The quota is read from cgroup v2's
 * `cpu.max` (`"200000 100000"`: 2 CPUs; `"max 100000"`: none) or cgroup v1's
 * `cpu.cfs_quota_us` / `cpu.cfs_period_us`, for the cgroup this process is
 * in (`/proc/self/cgroup`), and from every ancestor up to the root: the
 * tightest one wins. Elsewhere (macOS, no cgroup file) the affinity alone.
 */
import { readFileSync } from "node:fs"
import { availableParallelism } from "node:os"
import * as Path from "node:path"

/** @internal */
export interface CpuCount {
  readonly count: number
  /** How the count was chosen, for the log. */
  readonly reason: string
}

/** @internal */
export interface Sources {
  /** The CPUs this process may run on. Default: `os.availableParallelism()`. */
  readonly affinity?: number | undefined
  /** Where the cgroup file systems are mounted. Default `/sys/fs/cgroup`. */
  readonly root?: string | undefined
  /** The contents of `/proc/self/cgroup`. Default: read from there. */
  readonly procSelfCgroup?: string | undefined
}

const read = (file: string): string | undefined => {
  try {
    return readFileSync(file, "utf8").trim()
  } catch {
    return undefined
  }
}

/** Each directory from the cgroup's own up to the mount's root. */
const upwards = (mount: string, path: string): Array<string> => {
  const dirs: Array<string> = []
  let rel = path.replace(/^\/+/, "")
  while (true) {
    dirs.push(Path.join(mount, rel))
    if (rel === "" || rel === ".") return dirs
    const parent = Path.dirname(rel)
    rel = parent === "." ? "" : parent
  }
}

/** A quota in CPUs, or undefined for none. */
const quotaOf = (quota: number, period: number): number | undefined =>
  Number.isFinite(quota) && Number.isFinite(period) && quota > 0 && period > 0 ? quota / period : undefined

/** The tightest CPU quota of the cgroup and its ancestors: `[cpus, where]`. */
const cgroupQuota = (root: string, procSelfCgroup: string): readonly [number, string] | undefined => {
  let best: readonly [number, string] | undefined
  const consider = (cpus: number | undefined, where: string) => {
    if (cpus !== undefined && (best === undefined || cpus < best[0])) best = [cpus, where]
  }
  for (const line of procSelfCgroup.split("\n")) {
    const [, controllers, path] = /^\d+:([^:]*):(.*)$/.exec(line.trim()) ?? []
    if (controllers === undefined || path === undefined) continue
    if (controllers === "") {
      // cgroup v2: one hierarchy, `cpu.max` in each directory.
      for (const dir of upwards(root, path)) {
        const [quota, period] = (read(Path.join(dir, "cpu.max")) ?? "").split(/\s+/)
        if (quota !== undefined && quota !== "max") consider(quotaOf(Number(quota), Number(period)), `${dir}/cpu.max`)
      }
    } else if (controllers.split(",").includes("cpu")) {
      // cgroup v1: the cpu controller's own mount (`cpu`, or `cpu,cpuacct`).
      for (const mount of [Path.join(root, controllers), Path.join(root, "cpu"), Path.join(root, "cpu,cpuacct")]) {
        for (const dir of upwards(mount, path)) {
          const quota = Number(read(Path.join(dir, "cpu.cfs_quota_us")))
          const period = Number(read(Path.join(dir, "cpu.cfs_period_us")))
          consider(quotaOf(quota, period), `${dir}/cpu.cfs_quota_us`)
        }
      }
    }
  }
  return best
}

/**
 * The number of workers "one per CPU" gives here, and why.
 *
 * @internal
 */
export const cpuCount = (sources: Sources = {}): CpuCount => {
  const affinity = sources.affinity ?? availableParallelism()
  const procSelfCgroup =
    sources.procSelfCgroup ?? (process.platform === "linux" ? read("/proc/self/cgroup") : undefined)
  const quota = procSelfCgroup === undefined ? undefined : cgroupQuota(sources.root ?? "/sys/fs/cgroup", procSelfCgroup)
  if (quota !== undefined && Math.ceil(quota[0]) < affinity) {
    const cpus = Math.max(1, Math.ceil(quota[0]))
    return {
      count: cpus,
      reason: `one per CPU: the CPU quota of ${quota[1]} is ${Number(quota[0].toFixed(2))} CPUs (${affinity} available), so ${cpus}`
    }
  }
  return { count: affinity, reason: `one per CPU: ${affinity} available to this process` }
}
