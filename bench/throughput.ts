/**
 * Figure 4 — request path: hello-world HTTP throughput through 2 workers,
 * ours vs raw cluster (and any other system asked for), alternating;
 * ours-nodrain is ours with the workers' HTTP drain off (`drain: false`),
 * and with --before=REF the package at that commit runs beside them.
 *
 * Load: autocannon (latest, from bench/.scratch/peers) in its own process on
 * 127.0.0.1, keep-alive connections, `--connections` of them, `--warmup-s`
 * unmeasured then `--duration-s` measured. The load generator shares the
 * machine's cores with the workers and the primary.
 *
 * `--new-connections` sends `Connection: close` with every request, so each
 * request is a new connection the primary must accept and hand to a worker
 * (round-robin): the primary's share of the request path, not just the
 * workers'.
 *
 *   node bench/throughput.ts [--rounds=5] [--duration-s=10] [--connections=50] [--workers=2] [--systems=ours,ours-nodrain,raw] [--new-connections] [--quick]
 */
import {
  buildOurs,
  ensurePeers,
  finish,
  fmt,
  freePort,
  list,
  machine,
  note,
  num,
  printTable,
  awaitDistinctPids,
  probeUntil,
  requireNode,
  rotate,
  sleep,
  stats,
  str,
  type Table,
  watchdog,
  writeResults
} from "./lib/common.ts"
import { autocannon } from "./lib/autocannon.ts"
import { chooseSystems, HTTP_WORKER, type SystemName, startSystem } from "./lib/systems.ts"

requireNode()
const rounds = num("rounds", 5, 1)
const durationS = num("duration-s", 10, 2)
const warmupS = num("warmup-s", 3, 1)
const connections = num("connections", 50, 10)
const workers = num("workers", 2, 2)
const newConnections = str("new-connections", "0") !== "0"
const systems = await chooseSystems(["ours", "ours-nodrain", "raw"])
watchdog(num("timeout", 1800, 300))

const started = machine()
await buildOurs()
ensurePeers()

type Sample = { system: SystemName; round: number; rps: number; p50: number; p99: number; errors: number }
const samples: Array<Sample> = []

for (let round = 0; round < rounds; round++) {
  for (const system of rotate(systems, round)) {
    const port = await freePort()
    const running = await startSystem(system, { workers, port, workerScript: HTTP_WORKER })
    try {
      await awaitDistinctPids(port, workers, { timeoutMs: 30_000 })
      if (warmupS > 0) await autocannon(port, warmupS, { connections, newConnections })
      await sleep(200)
      const r = await autocannon(port, durationS, { connections, newConnections })
      const sample = {
        system,
        round,
        rps: r.requests.total / durationS,
        p50: r.latency.p50,
        p99: r.latency.p99,
        errors: r.errors + r.timeouts + r.non2xx
      }
      samples.push(sample)
      note(
        `round ${round + 1}/${rounds} ${system}: ${fmt(sample.rps, 0)} req/s, p99 ${sample.p99} ms, ${sample.errors} errors`
      )
    } finally {
      await running.stop()
    }
  }
}

const of = (s: SystemName, k: "rps" | "p50" | "p99" | "errors") =>
  stats(samples.filter((x) => x.system === s).map((x) => x[k]))
const ours = of("ours", "rps")
const table: Table = {
  title: `Request path: hello-world throughput through ${workers} workers${newConnections ? " (a new connection per request)" : " (keep-alive)"}`,
  headers: ["system", "median req/s", "p95 req/s", "ours/peer", "latency p50 ms", "latency p99 ms", "errors", "rounds"],
  rows: systems.map((s) => {
    const st = of(s, "rps")
    return [
      s,
      fmt(st.median, 0),
      fmt(st.p95, 0),
      s === "ours" ? "" : `${(ours.median / st.median).toFixed(3)}x`,
      fmt(of(s, "p50").median),
      fmt(of(s, "p99").median),
      fmt(of(s, "errors").max, 0),
      String(st.n)
    ]
  }),
  notes: [
    `autocannon: ${connections} connections, pipelining 1, ${warmupS} s warm-up then ${durationS} s measured, per round; ${rounds} rounds, systems alternating.`,
    "The load generator runs on the same cores as the workers and the primary. Latencies: medians over rounds of autocannon's p50/p99."
  ]
}
printTable(table)
writeResults(newConnections ? "throughput-new-connections" : "throughput", started, [table], {
  rounds,
  durationS,
  warmupS,
  connections,
  workers,
  newConnections,
  systems,
  samples
})
finish()
