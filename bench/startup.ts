/**
 * Figure 1 — start-up: from start to all N workers ready and answering HTTP,
 * for N = 1, 2, 4, 8, ours and its peers alternating round by round.
 *
 * Two clocks, both read on this machine's shared time base:
 * - "cold": from just before the primary process is spawned (PM2: before
 *   connecting, which starts its daemon) — includes loading the primary's code;
 * - "warm": from the primary's own stamp just before it begins supervising
 *   (PM2: just before `pm2.start`, its daemon already up) — the supervisor alone.
 * "Answering" means: new-connection GETs have been answered by N distinct
 * worker pids.
 *
 *   node bench/startup.ts [--rounds=5] [--workers=1,2,4,8] [--systems=ours,ours-bundled,raw,throng,pm2] [--before=REF] [--quick]
 *
 * `--before=REF` (what `npm run bench -- --before=REF` passes on) adds
 * `before` and `before-bundled` to the default systems: the same primaries
 * running the package built at commit REF (bench/lib/before.ts), side by side.
 * On their rows, "ours/peer" is after/before.
 */
import {
  buildOurs,
  type Table,
  ensurePeers,
  fmt,
  freePort,
  machine,
  note,
  numList,
  num,
  list,
  finish,
  printTable,
  awaitDistinctPids,
  probeUntil,
  ratio,
  requireNode,
  rotate,
  stats,
  watchdog,
  writeResults
} from "./lib/common.ts"
import {
  HTTP_WORKER,
  needsPeers,
  chooseSystems,
  type SystemName,
  startSystem,
  beforeNotes,
  oursFor
} from "./lib/systems.ts"

requireNode()
const rounds = num("rounds", 5, 1)
const sizes = numList("workers", [1, 2, 4, 8], [1, 2])
const systems = await chooseSystems(["ours", "ours-bundled", "raw", "throng", "pm2"])
watchdog(num("timeout", 1800, 300))

const started = machine()
await buildOurs()
if (needsPeers(systems)) ensurePeers()

type Sample = { system: SystemName; workers: number; round: number; cold: number; warm: number }
const samples: Array<Sample> = []

for (let round = 0; round < rounds; round++) {
  for (const workers of sizes) {
    for (const system of rotate(systems, round)) {
      const port = await freePort()
      const running = await startSystem(system, { workers, port, workerScript: HTTP_WORKER })
      try {
        const at = await awaitDistinctPids(port, workers, { timeoutMs: 30_000, every: 2 })
        const begin = await running.begin
        samples.push({ system, workers, round, cold: at - running.t0, warm: at - begin })
        note(
          `round ${round + 1}/${rounds} N=${workers} ${system}: cold ${fmt(at - running.t0)} ms, warm ${fmt(at - begin)} ms`
        )
      } finally {
        await running.stop()
      }
    }
  }
}

const rows = (key: "cold" | "warm") =>
  sizes.flatMap((workers) => {
    const of = (s: SystemName) =>
      stats(samples.filter((x) => x.system === s && x.workers === workers).map((x) => x[key]))
    const raw = of("raw")
    return systems.map((s) => {
      const st = of(s)
      return [
        `N=${workers} ${s}`,
        fmt(st.median),
        fmt(st.p95),
        String(st.n),
        s === "raw" ? "" : ratio(st.median, raw.median),
        s === "ours" ? "" : ratio(of(oursFor(s)).median, st.median)
      ]
    })
  })

const headers = ["system", "median ms", "p95 ms", "samples", "vs raw", "ours/peer"]
const tables: Array<Table> = [
  {
    title: "Start-up, cold: spawn of the primary → all N workers answering HTTP",
    headers,
    rows: rows("cold"),
    notes: ["PM2: from connecting (which starts its daemon) to all answering.", ...beforeNotes(systems)]
  },
  {
    title: "Start-up, warm: the primary begins supervising → all N workers answering HTTP",
    headers,
    rows: rows("warm"),
    notes: ["PM2: from pm2.start (daemon already running) to all answering.", ...beforeNotes(systems)]
  }
]
for (const t of tables) printTable(t)
writeResults("startup", started, tables, { rounds, sizes, systems, samples })
finish()
