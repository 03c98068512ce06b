/**
 * Figure 3 — primary memory: idle RSS of the supervising process with 2
 * workers (PM2: its daemon), systems alternating round by round.
 *
 * Each round starts each system with the hello-world workers, waits until all
 * answer, lets it idle `--idle-ms`, then reads VmRSS from /proc/<pid>/status
 * `--samples` times, 200 ms apart (the median of those is the round's value).
 * Also reported: open fds and threads of the same process.
 * `ours-bundled` is the same primary bundled into one file; `ours-deep` (not
 * run by default) is ours importing only the modules it needs (no
 * `effect-prefork/node`, hence no `@effect/platform-node`).
 *
 *   node bench/memory.ts [--rounds=5] [--workers=2] [--idle-ms=5000] [--systems=ours,ours-bundled,raw,throng,pm2] [--before=REF] [--quick]
 *
 * `--before=REF` (what `npm run bench -- --before=REF` passes on) adds
 * `before` and `before-bundled` to the default systems: the same primaries
 * running the package built at commit REF (bench/lib/before.ts), side by side.
 * On their rows, "ours/peer" is after/before.
 */
import {
  buildOurs,
  ensurePeers,
  finish,
  fmt,
  freePort,
  list,
  machine,
  mib,
  note,
  num,
  printTable,
  awaitDistinctPids,
  probeUntil,
  procSample,
  requireNode,
  rotate,
  sleep,
  stats,
  type Table,
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
const workers = num("workers", 2, 2)
const idleMs = num("idle-ms", 5000, 500)
const perRound = num("samples", 5, 2)
const systems = await chooseSystems(["ours", "ours-bundled", "raw", "throng", "pm2"])
watchdog(num("timeout", 1800, 300))

const started = machine()
await buildOurs()
if (needsPeers(systems)) ensurePeers()

type Sample = { system: SystemName; round: number; rssMiB: number; fds: number; threads: number }
const samples: Array<Sample> = []

for (let round = 0; round < rounds; round++) {
  for (const system of rotate(systems, round)) {
    const port = await freePort()
    const running = await startSystem(system, { workers, port, workerScript: HTTP_WORKER })
    try {
      await awaitDistinctPids(port, workers, { timeoutMs: 30_000 })
      await sleep(idleMs)
      const readings = []
      for (let i = 0; i < perRound; i++) {
        const s = procSample(running.pid())
        if (s) readings.push(s)
        await sleep(200)
      }
      if (readings.length === 0) throw new Error(`${system}: cannot read /proc/${running.pid()}`)
      const sample = {
        system,
        round,
        rssMiB: mib(stats(readings.map((r) => r.rssKiB)).median),
        fds: stats(readings.map((r) => r.fds)).median,
        threads: stats(readings.map((r) => r.threads)).median
      }
      samples.push(sample)
      note(`round ${round + 1}/${rounds} ${system}: ${fmt(sample.rssMiB)} MiB, ${sample.fds} fds`)
    } finally {
      await running.stop()
    }
  }
}

const of = (s: SystemName, k: "rssMiB" | "fds" | "threads") =>
  stats(samples.filter((x) => x.system === s).map((x) => x[k]))
const raw = of("raw", "rssMiB")
const table: Table = {
  title: `Primary memory: idle RSS of the supervising process with ${workers} workers (PM2: its daemon)`,
  headers: ["system", "median MiB", "p95 MiB", "vs raw (MiB)", "ours/peer", "fds", "threads", "samples"],
  rows: systems.map((s) => {
    const st = of(s, "rssMiB")
    const ours = of(oursFor(s), "rssMiB")
    return [
      s,
      fmt(st.median),
      fmt(st.p95),
      s === "raw" ? "" : `${st.median - raw.median >= 0 ? "+" : ""}${fmt(st.median - raw.median)}`,
      s === "ours" ? "" : `${(ours.median / st.median).toFixed(2)}x`,
      fmt(of(s, "fds").median, 0),
      fmt(of(s, "threads").median, 0),
      String(st.n)
    ]
  }),
  notes: [
    `VmRSS after ${idleMs} ms idle, median of ${perRound} readings per round; ${rounds} rounds, systems alternating.`,
    "ours-bundled: the same primary as ours, bundled into one file with Effect inside (docs/production.md).",
    ...(systems.includes("ours-deep")
      ? ["ours-deep: ours without the `effect-prefork/node` entry point (no @effect/platform-node)."]
      : []),
    ...beforeNotes(systems)
  ]
}
printTable(table)
writeResults("memory", started, [table], { rounds, workers, idleMs, systems, samples })
finish()
