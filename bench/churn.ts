/**
 * Figure 6 — churn: workers that exit 1 at once, for a fixed count of
 * restarts (default 5,000), with no restart delay in any system.
 *
 * Each system starts N workers (default 2) of bench/fixtures/churn-worker.cjs,
 * which serve HTTP while the flag file is absent. Once they answer, the
 * benchmark takes the "before" reading of the primary (after a full GC: the
 * primary runs with --expose-gc), creates the flag (every worker now exits 1
 * at once, on every start), waits until the primary has seen `--restarts`
 * more exits, removes the flag, waits until N workers answer again and have
 * been up 1 s, and takes the "after" reading.
 *
 * Reported: restarts per second during the crash loop; RSS and heap (after
 * GC), open fds (/proc/<pid>/fd), listeners on `process` and `cluster`, and
 * active handles (`process.getActiveResourcesInfo()`), before and after.
 *
 *   node bench/churn.ts [--restarts=5000] [--workers=2] [--rounds=1] [--systems=ours,ours-bundled,raw] [--before=REF] [--quick]
 *
 * `--before=REF` (what `npm run bench -- --before=REF` passes on) adds
 * `before` and `before-bundled` to the default systems: the same primaries
 * running the package built at commit REF (bench/lib/before.ts).
 * `--dists=old=/tmp/old/dist,…` adds, beside `--systems`, "ours" primaries
 * running other builds of the package (compiled JavaScript, as
 * bench/.scratch/dist), to compare a change side by side in one run.
 */
import { rmSync, writeFileSync } from "node:fs"
import * as Path from "node:path"
import {
  buildOurs,
  ensurePeers,
  finish,
  fmt,
  freePort,
  list,
  machine,
  note,
  now,
  num,
  onCleanup,
  printTable,
  awaitDistinctPids,
  probeUntil,
  procSample,
  requireNode,
  rotate,
  scratchDir,
  sleep,
  stats,
  type Table,
  watchdog,
  writeResults
} from "./lib/common.ts"
import {
  beforeNotes,
  CHURN_WORKER,
  needsPeers,
  chooseSystems,
  type Running,
  type StartOptions,
  startSystem,
  startWithDist
} from "./lib/systems.ts"

requireNode()
const restarts = num("restarts", 5000, 50)
const workers = num("workers", 2, 2)
const rounds = num("rounds", 1, 1)
const known = await chooseSystems(["ours", "ours-bundled", "raw"])
if (known.includes("pm2")) throw new Error("churn reads the primary through its control channel: not for pm2")
const dists = new Map(
  list("dists", []).map((entry) => {
    const i = entry.indexOf("=")
    if (i <= 0) throw new Error(`--dists: expected name=directory, got ${entry}`)
    if ((known as ReadonlyArray<string>).includes(entry.slice(0, i)))
      throw new Error(`--dists: ${entry.slice(0, i)} is already a system of this run: name the build otherwise`)
    return [entry.slice(0, i), Path.resolve(entry.slice(i + 1))] as const
  })
)
const systems: Array<string> = [...known, ...dists.keys()]
const start = (system: string, options: StartOptions): Promise<Running> => {
  const dist = dists.get(system)
  if (dist === undefined) return startSystem(system as (typeof known)[number], options)
  return Promise.resolve(startWithDist(system, dist, options))
}
watchdog(num("timeout", 3600, 300))

const started = machine()
await buildOurs()
if (needsPeers(known)) ensurePeers()

interface Reading {
  readonly rssMiB: number
  readonly heapMiB: number
  /** Where the RSS is (MiB): V8's resident spaces, V8's malloc, and the kernel's anonymous / file-backed split and PSS. */
  readonly detail: Readonly<Record<DetailKey, number>>
  readonly fds: number
  readonly listeners: number
  readonly resources: number
  readonly resourceKinds: Record<string, number>
}

const DETAIL = {
  "V8 heap committed": "heapTotal",
  "new space": "new_space",
  "old space": "old_space",
  "code + trusted": "code",
  "large objects": "lo",
  "V8 malloc": "malloced",
  anonymous: "Anonymous",
  "file-backed": "file",
  PSS: "Pss"
} as const
type DetailKey = (typeof DETAIL)[keyof typeof DETAIL]

const detailOf = (r: Record<string, any>): Record<DetailKey, number> => {
  const spaces: Record<string, number> = r.memory?.spaces ?? {}
  const kernel: Record<string, number> = r.memory?.kernel ?? {}
  const m = (bytes: number | undefined) => (bytes ?? Number.NaN) / 2 ** 20
  return {
    heapTotal: m(r.heapTotal),
    new_space: m(spaces["new_space"]),
    old_space: m(spaces["old_space"]),
    code: m((spaces["code_space"] ?? 0) + (spaces["trusted_space"] ?? 0) + (spaces["code_large_object_space"] ?? 0)),
    lo: m((spaces["large_object_space"] ?? 0) + (spaces["new_large_object_space"] ?? 0)),
    malloced: m(r.memory?.mallocedMemory),
    Anonymous: m(kernel["Anonymous"]),
    file: m((kernel["Rss"] ?? Number.NaN) - (kernel["Anonymous"] ?? Number.NaN)),
    Pss: m(kernel["Pss"])
  }
}

const read = async (running: Running): Promise<Reading> => {
  const r = await running.request({ type: "gc" })
  const proc = procSample(running.pid())
  return {
    rssMiB: r.rss / 2 ** 20,
    heapMiB: r.heapUsed / 2 ** 20,
    detail: detailOf(r),
    fds: proc?.fds ?? Number.NaN,
    listeners: r.listeners,
    resources: r.resources,
    resourceKinds: r.resourceKinds
  }
}

const allAnswering = (port: number) => {
  return awaitDistinctPids(port, workers, { timeoutMs: 60_000 })
}

type Sample = {
  system: string
  round: number
  restartsPerS: number
  seconds: number
  cpuMs: number
  before: Reading
  after: Reading
}
const samples: Array<Sample> = []
const dir = scratchDir(`churn-${process.pid}`)
onCleanup(() => rmSync(dir, { recursive: true, force: true }))

for (let round = 0; round < rounds; round++) {
  for (const system of rotate(systems, round)) {
    const port = await freePort()
    const flag = Path.join(dir, `flag-${system}-${round}`)
    rmSync(flag, { force: true })
    const running = await start(system, {
      workers,
      port,
      workerScript: CHURN_WORKER,
      env: { BENCH_CHURN_FLAG: flag },
      exposeGc: true
    })
    try {
      await allAnswering(port)
      await sleep(1000)
      const before = await read(running)
      const base = (await running.request({ type: "stats" })).exits as number
      const cpu0 = procSample(running.pid())?.cpuMs ?? Number.NaN
      const t0 = now()
      writeFileSync(flag, "")
      const reached = await running.request({ type: "waitExits", n: base + restarts }, 30 * 60_000)
      const t1 = reached.t as number
      rmSync(flag, { force: true })
      const cpu1 = procSample(running.pid())?.cpuMs ?? Number.NaN
      await allAnswering(port)
      await sleep(1000)
      const after = await read(running)
      const seconds = (t1 - t0) / 1000
      const sample = { system, round, restartsPerS: restarts / seconds, seconds, cpuMs: cpu1 - cpu0, before, after }
      samples.push(sample)
      note(
        `round ${round + 1}/${rounds} ${system}: ${fmt(sample.restartsPerS)} restarts/s; RSS ${fmt(before.rssMiB)} → ${fmt(after.rssMiB)} MiB, ` +
          `heap ${fmt(before.heapMiB)} → ${fmt(after.heapMiB)} MiB, fds ${before.fds} → ${after.fds}, ` +
          `listeners ${before.listeners} → ${after.listeners}, handles ${before.resources} → ${after.resources}`
      )
    } finally {
      rmSync(flag, { force: true })
      await running.stop()
    }
  }
}
rmSync(dir, { recursive: true, force: true })

const of = (s: string) => samples.filter((x) => x.system === s)
const med = (xs: ReadonlyArray<number>) => stats(xs).median
const rawRate = med(of("raw").map((x) => x.restartsPerS))
const table: Table = {
  title: `Churn: ${restarts.toLocaleString("en-US")} restarts of ${workers} workers that exit 1 at once (no restart delay)`,
  headers: [
    "system",
    "restarts/s",
    "vs raw",
    "primary CPU ms/restart",
    "RSS MiB before → after",
    "heap MiB before → after",
    "fds",
    "listeners",
    "active handles"
  ],
  rows: systems.map((s) => {
    const xs = of(s)
    const pair = (f: (r: Reading) => number, digits: number) =>
      `${fmt(med(xs.map((x) => f(x.before))), digits)} → ${fmt(med(xs.map((x) => f(x.after))), digits)}`
    const rate = med(xs.map((x) => x.restartsPerS))
    return [
      s,
      fmt(rate),
      s !== "raw" && systems.includes("raw") ? `${(rate / rawRate).toFixed(2)}x` : "",
      fmt(med(xs.map((x) => x.cpuMs / restarts)), 2),
      pair((r) => r.rssMiB, 1),
      pair((r) => r.heapMiB, 2),
      pair((r) => r.fds, 0),
      pair((r) => r.listeners, 0),
      pair((r) => r.resources, 0)
    ]
  }),
  notes: [
    "before: N workers serving, idle 1 s; after: the crash loop ended, N workers serving again for 1 s. Memory after a full GC in the primary.",
    `${rounds} round(s), systems alternating. Primary CPU: user+system time of the primary during the crash loop, per restart.`,
    ...beforeNotes(systems, false),
    ...[...dists].map(([name, dist]) => `${name}: ours running the build in ${dist} (--dists).`)
  ]
}
const detailTable: Table = {
  title: "Churn: where the primary's RSS went (MiB, before → after, after a full GC)",
  headers: ["system", "RSS", ...Object.keys(DETAIL)],
  rows: systems.map((s) => {
    const xs = of(s)
    const pair = (f: (r: Reading) => number) =>
      `${fmt(med(xs.map((x) => f(x.before))))} → ${fmt(med(xs.map((x) => f(x.after))))}`
    return [s, pair((r) => r.rssMiB), ...Object.values(DETAIL).map((k) => pair((r) => r.detail[k]))]
  }),
  notes: [
    "V8 heap committed: heapTotal; new/old space, code + trusted, large objects: V8's resident (physical) size of those spaces.",
    "V8 malloc: what V8 itself holds from malloc. anonymous / file-backed: resident pages by kind (/proc/<pid>/smaps_rollup); PSS shares shared pages among their sharers.",
    ...(list("primary-node-args", []).length > 0
      ? [`Primary Node flags: ${list("primary-node-args", []).join(" ")}`]
      : []),
    ...(list("primary-env", []).length > 0 ? [`Primary environment: ${list("primary-env", []).join(" ")}`] : [])
  ]
}
printTable(table)
printTable(detailTable)
writeResults("churn", started, [table, detailTable], { restarts, workers, rounds, systems, samples })
finish()
