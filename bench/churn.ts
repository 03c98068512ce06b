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
 *   node bench/churn.ts [--restarts=5000] [--workers=2] [--rounds=1] [--systems=ours,raw] [--quick]
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
import { CHURN_WORKER, needsPeers, parseSystems, type Running, type SystemName, startSystem } from "./lib/systems.ts"

requireNode()
const restarts = num("restarts", 5000, 50)
const workers = num("workers", 2, 2)
const rounds = num("rounds", 1, 1)
const systems = parseSystems(list("systems", ["ours", "raw"]))
if (systems.includes("pm2")) throw new Error("churn reads the primary through its control channel: not for pm2")
watchdog(num("timeout", 3600, 300))

const started = machine()
buildOurs()
if (needsPeers(systems)) ensurePeers()

interface Reading {
  readonly rssMiB: number
  readonly heapMiB: number
  readonly fds: number
  readonly listeners: number
  readonly resources: number
  readonly resourceKinds: Record<string, number>
}

const read = async (running: Running): Promise<Reading> => {
  const r = await running.request({ type: "gc" })
  const proc = procSample(running.pid())
  return {
    rssMiB: r.rss / 2 ** 20,
    heapMiB: r.heapUsed / 2 ** 20,
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
  system: SystemName
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
    const running = await startSystem(system, {
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

const of = (s: SystemName) => samples.filter((x) => x.system === s)
const med = (xs: ReadonlyArray<number>) => stats(xs).median
const rawRate = med(of("raw").map((x) => x.restartsPerS))
const table: Table = {
  title: `Churn: ${restarts.toLocaleString("en-US")} restarts of ${workers} workers that exit 1 at once (no restart delay)`,
  headers: [
    "system",
    "restarts/s",
    "ours/raw",
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
      s === "ours" && systems.includes("raw") ? `${(rate / rawRate).toFixed(2)}x` : "",
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
    `${rounds} round(s), systems alternating. Primary CPU: user+system time of the primary during the crash loop, per restart.`
  ]
}
printTable(table)
writeResults("churn", started, [table], { restarts, workers, rounds, systems, samples })
finish()
