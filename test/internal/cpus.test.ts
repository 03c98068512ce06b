/**
 * "One per CPU" in a container: the affinity mask capped by the cgroup's CPU
 * quota, read from a fake cgroup tree (v2 `cpu.max`, v1 `cpu.cfs_quota_us`).
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as Path from "node:path"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { cpuCount } from "../../src/internal/cpus.ts"

const root = mkdtempSync(Path.join(tmpdir(), "prefork-cgroup-"))
afterAll(() => rmSync(root, { recursive: true, force: true }))

const file = (path: string, text: string) => {
  mkdirSync(Path.dirname(Path.join(root, path)), { recursive: true })
  writeFileSync(Path.join(root, path), `${text}\n`)
}

describe("cpuCount", () => {
  it("cgroup v2: a quota of 1.5 CPUs gives 2 workers on 8 CPUs, and says why", () => {
    file("v2a/kubepods/pod1/cpu.max", "150000 100000")
    const { count, reason } = cpuCount({
      affinity: 8,
      root: Path.join(root, "v2a"),
      procSelfCgroup: "0::/kubepods/pod1"
    })
    assert.strictEqual(count, 2)
    assert.include(reason, "cpu.max")
    assert.include(reason, "1.5 CPUs")
  })

  it("cgroup v2: no quota ('max') leaves the affinity; an ancestor's tighter quota wins", () => {
    file("v2b/a/cpu.max", "100000 100000")
    file("v2b/a/b/cpu.max", "max 100000")
    assert.strictEqual(cpuCount({ affinity: 8, root: Path.join(root, "v2b"), procSelfCgroup: "0::/a/b" }).count, 1)
    file("v2c/x/cpu.max", "max 100000")
    assert.strictEqual(cpuCount({ affinity: 8, root: Path.join(root, "v2c"), procSelfCgroup: "0::/x" }).count, 8)
  })

  it("the affinity mask wins when it is smaller than the quota", () => {
    file("v2d/c/cpu.max", "400000 100000")
    const { count, reason } = cpuCount({ affinity: 2, root: Path.join(root, "v2d"), procSelfCgroup: "0::/c" })
    assert.strictEqual(count, 2)
    assert.include(reason, "2 available")
  })

  it("cgroup v1: cpu.cfs_quota_us / cpu.cfs_period_us under the cpu controller's mount; -1 is no quota", () => {
    file("v1/cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "250000")
    file("v1/cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000")
    const cgroup = "4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n0::/"
    assert.strictEqual(cpuCount({ affinity: 16, root: Path.join(root, "v1"), procSelfCgroup: cgroup }).count, 3)
    file("v1none/cpu/docker/abc/cpu.cfs_quota_us", "-1")
    file("v1none/cpu/docker/abc/cpu.cfs_period_us", "100000")
    const none = "3:cpu:/docker/abc"
    assert.strictEqual(cpuCount({ affinity: 16, root: Path.join(root, "v1none"), procSelfCgroup: none }).count, 16)
  })

  it("no cgroup at all (macOS, or nothing mounted): the affinity, never less than 1 worker", () => {
    assert.strictEqual(cpuCount({ affinity: 4, root: Path.join(root, "missing"), procSelfCgroup: "0::/" }).count, 4)
    file("tiny/t/cpu.max", "10000 100000")
    assert.strictEqual(cpuCount({ affinity: 4, root: Path.join(root, "tiny"), procSelfCgroup: "0::/t" }).count, 1)
  })
})
