/**
 * Figure 2 — restart latency: from a worker's crash to its replacement
 * answering HTTP, ours and its peers alternating round by round.
 *
 * Each round starts each system with N workers (default 1), waits until all
 * answer, then crashes a worker `--crashes` times: `GET /crash` makes the
 * worker answer, stamp the time (epoch ms, sub-ms, shared time base) into a
 * file and `process.exit(1)`. The benchmark probes with new-connection GETs
 * (one every ms, up to 4 in flight) until a pid it has not seen answers;
 * latency = that answer's arrival − the stamp. Writes
 * bench/results/restart-latency.svg, one row per system.
 *
 *   node bench/restart.ts [--rounds=5] [--crashes=10] [--workers=1] [--systems=ours,ours-bundled,raw,throng,pm2] [--before=REF] [--quick]
 *
 * `--before=REF` (what `npm run bench -- --before=REF` passes on) adds
 * `before` and `before-bundled` to the default systems: the same primaries
 * running the package built at commit REF (bench/lib/before.ts), side by side.
 * On their rows, "ours/peer" is after/before.
 */
import { rmSync, writeFileSync } from "node:fs"
import * as Path from "node:path"
import {
  buildOurs,
  ensurePeers,
  finish,
  fmt,
  freePort,
  get,
  list,
  machine,
  note,
  num,
  onCleanup,
  out,
  pidOf,
  printTable,
  probeUntil,
  ratio,
  readStamp,
  requireNode,
  RESULTS,
  rotate,
  scratchDir,
  sleep,
  stats,
  type Table,
  waitFor,
  watchdog,
  writeResults
} from "./lib/common.ts"
import { stripChart } from "./lib/svg.ts"
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
const crashes = num("crashes", 10, 2)
const workers = num("workers", 1, 1)
const settleMs = num("settle-ms", 150, 50)
/** Probing starts this long after the crash answer (well under any restart), when the worker is surely gone. */
const probeDelayMs = num("probe-delay-ms", 20, 20)
/** A replacement not answering within this is counted as a restart that never came. */
const restartTimeoutMs = num("restart-timeout-ms", 5000, 5000)
const systems = await chooseSystems(["ours", "ours-bundled", "raw", "throng", "pm2"])
watchdog(num("timeout", 1800, 300))

const started = machine()
await buildOurs()
if (needsPeers(systems)) ensurePeers()
const stampDir = scratchDir(`stamps-${process.pid}`)
onCleanup(() => rmSync(stampDir, { recursive: true, force: true }))

type Sample = { system: SystemName; round: number; latency: number }
const samples: Array<Sample> = []
const failures: Array<string> = []

for (let round = 0; round < rounds; round++) {
  for (const system of rotate(systems, round)) {
    const port = await freePort()
    const running = await startSystem(system, {
      workers,
      port,
      workerScript: HTTP_WORKER,
      env: { BENCH_STAMP_DIR: stampDir }
    })
    try {
      const known = new Set<number>()
      await probeUntil(
        port,
        (pid) => {
          known.add(pid)
          return known.size >= workers
        },
        { timeoutMs: 30_000, inFlight: Math.max(4, workers) }
      )
      await sleep(settleMs)
      for (let c = 0; c < crashes; c++) {
        let crashed: number | undefined
        try {
          const answer = await get(port, "/crash", 5000)
          crashed = pidOf(answer)
          if (crashed === undefined) throw new Error(`/crash answered ${answer.status} ${answer.body}`)
          const gone = crashed
          await sleep(probeDelayMs)
          const at = await probeUntil(port, (pid) => pid !== gone && !known.has(pid), {
            timeoutMs: restartTimeoutMs,
            every: 1,
            inFlight: 4
          })
          const stamp = await readStamp(stampDir, gone)
          samples.push({ system, round, latency: at - stamp })
        } catch (error) {
          failures.push(`${system} round ${round + 1} crash ${c + 1}: ${String(error)}`)
          note(`${failures.at(-1)!}; ending this system's round`)
          break
        }
        if (crashed !== undefined) known.delete(crashed)
        // Learn the replacement's pid (and any other) before the next crash.
        await probeUntil(
          port,
          (pid) => {
            known.add(pid)
            return known.size >= workers
          },
          { timeoutMs: 20_000, inFlight: Math.max(4, workers) }
        ).catch(() => {})
        await sleep(settleMs)
      }
      const mine = samples.filter((s) => s.system === system && s.round === round).map((s) => s.latency)
      note(`round ${round + 1}/${rounds} ${system}: median ${fmt(stats(mine).median)} ms over ${mine.length} crashes`)
    } finally {
      await running.stop()
    }
  }
}
rmSync(stampDir, { recursive: true, force: true })

const of = (s: SystemName) => samples.filter((x) => x.system === s).map((x) => x.latency)
const rawLatency = stats(of("raw"))
const table: Table = {
  title: `Restart latency: worker crash (its own stamp) → replacement answering HTTP (N=${workers})`,
  headers: ["system", "median ms", "p95 ms", "min ms", "max ms", "samples", "vs raw (median)", "ours/peer (median)"],
  rows: systems.map((s) => {
    const st = stats(of(s))
    return [
      s,
      fmt(st.median),
      fmt(st.p95),
      fmt(st.min),
      fmt(st.max),
      String(st.n),
      s === "raw" ? "" : ratio(st.median, rawLatency.median),
      s === "ours" ? "" : ratio(stats(of(oursFor(s))).median, st.median)
    ]
  }),
  notes: [
    `${rounds} rounds × ${crashes} crashes per system, systems alternating; probes are new-connection GETs every 1 ms.`,
    `Probing starts ${probeDelayMs} ms after the crash answer; a replacement not answering within ${restartTimeoutMs} ms ends that system's round.`,
    ...beforeNotes(systems),
    ...systems.flatMap((s) => {
      const n = failures.filter((f) => f.startsWith(`${s} `)).length
      return n > 0 ? [`${s}: ${n} crash(es) with no replacement answering (see the JSON for each)`] : []
    })
  ]
}
printTable(table)

const svg = stripChart({
  title: "Restart latency: crash → replacement answering HTTP",
  subtitle: `${workers} worker(s), ${rounds}×${crashes} crashes per system, ${started.cores} cores, Node ${started.node}`,
  unit: "milliseconds",
  series: systems.map((s) => ({ label: s, values: of(s) }))
})
const svgPath = Path.join(RESULTS, "restart-latency.svg")
writeResults("restart", started, [table], { rounds, crashes, workers, systems, samples, failures }, [
  "![Restart latency per system](../bench/results/restart-latency.svg)"
])
writeFileSync(svgPath, svg)
out(`  chart: ${Path.relative(process.cwd(), svgPath)}`)
finish()
