/**
 * Figure 5 — request latency under churn. In round-robin mode (Node's
 * default) the primary accepts every connection and hands it to a worker, so
 * whatever blocks the supervisor's event loop shows up as request latency.
 *
 * Each system runs 3 slots of the hello-world worker: slots 0 and 1 serve,
 * slot 2 exits 1 at once on every start (a crash loop, restarted with no
 * delay). Meanwhile an open-loop generator in this process sends GETs at a
 * fixed rate, each on a new connection (so each goes through the primary),
 * and measures each from its scheduled send time (no coordinated omission).
 * Also run without the crash loop ("steady") as the reference.
 *
 *   node bench/churn-latency.ts [--rounds=3] [--rate=500] [--duration-s=15] [--systems=ours,ours-bundled,raw] [--variants=steady,churn] [--before=REF] [--quick]
 *
 * `--before=REF` (what `npm run bench -- --before=REF` passes on) adds
 * `before` and `before-bundled` to the default systems: the same primaries
 * running the package built at commit REF (bench/lib/before.ts), side by side.
 */
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
  now,
  num,
  percentile,
  printTable,
  awaitDistinctPids,
  probeUntil,
  requireNode,
  rotate,
  sleep,
  stats,
  type Table,
  watchdog,
  writeResults
} from "./lib/common.ts"
import { HTTP_WORKER, needsPeers, chooseSystems, type SystemName, startSystem, beforeNotes } from "./lib/systems.ts"

requireNode()
const rounds = num("rounds", 3, 1)
const rate = num("rate", 500, 200)
const durationS = num("duration-s", 15, 2)
const maxInFlight = num("max-in-flight", 256, 256)
const systems = await chooseSystems(["ours", "ours-bundled", "raw"])
const variants = list("variants", ["steady", "churn"])
if (systems.includes("pm2"))
  throw new Error("churn-latency counts restarts through the primary's control channel: not for pm2")
watchdog(num("timeout", 1800, 300))

const started = machine()
await buildOurs()
if (needsPeers(systems)) ensurePeers()

interface Load {
  readonly latencies: Array<number>
  readonly errors: number
  readonly dropped: number
  readonly sent: number
}

/** Open loop: request k is due at start + k / rate; its latency counts from then. */
const openLoop = (port: number, seconds: number): Promise<Load> =>
  new Promise((resolve) => {
    const latencies: Array<number> = []
    let errors = 0
    let dropped = 0
    let sent = 0
    let inFlight = 0
    const total = Math.round(rate * seconds)
    const start = now() + 5
    let settled = 0
    const maybeDone = () => {
      if (settled === total) {
        clearInterval(timer)
        resolve({ latencies, errors, dropped, sent })
      }
    }
    const tick = () => {
      const due = Math.min(total, Math.floor((now() - start) * (rate / 1000)) + 1)
      while (sent < due) {
        const scheduled = start + (sent * 1000) / rate
        sent++
        if (inFlight >= maxInFlight) {
          dropped++
          settled++
          continue
        }
        inFlight++
        get(port, "/", 5000).then(
          (a) => {
            inFlight--
            settled++
            if (a.status === 200) latencies.push(a.at - scheduled)
            else errors++
            maybeDone()
          },
          () => {
            inFlight--
            settled++
            errors++
            maybeDone()
          }
        )
      }
      maybeDone()
    }
    const timer = setInterval(tick, 1)
  })

type Sample = {
  system: SystemName
  variant: string
  round: number
  p50: number
  p99: number
  max: number
  errors: number
  dropped: number
  sent: number
  restartsPerS: number
}
const samples: Array<Sample> = []

for (let round = 0; round < rounds; round++) {
  for (const variant of variants) {
    for (const system of rotate(systems, round)) {
      const port = await freePort()
      const churn = variant === "churn"
      const running = await startSystem(system, {
        workers: 3,
        port,
        workerScript: HTTP_WORKER,
        env: churn ? { BENCH_CRASH_SLOT: "2" } : {}
      })
      try {
        const serving = churn ? 2 : 3
        await awaitDistinctPids(port, serving, { timeoutMs: 30_000 })
        await sleep(500)
        const before = await running.request({ type: "stats" })
        const t0 = now()
        const load = await openLoop(port, durationS)
        const after = await running.request({ type: "stats" })
        const elapsedS = (now() - t0) / 1000
        const sample = {
          system,
          variant,
          round,
          p50: percentile(load.latencies, 0.5),
          p99: percentile(load.latencies, 0.99),
          max: stats(load.latencies).max,
          errors: load.errors,
          dropped: load.dropped,
          sent: load.sent,
          restartsPerS: (after.exits - before.exits) / elapsedS
        }
        samples.push(sample)
        note(
          `round ${round + 1}/${rounds} ${variant} ${system}: p50 ${fmt(sample.p50, 2)} ms, p99 ${fmt(sample.p99, 2)} ms, ` +
            `${sample.errors} errors, ${sample.dropped} dropped, ${fmt(sample.restartsPerS)} restarts/s`
        )
      } finally {
        await running.stop()
      }
    }
  }
}

// Sanity: a request to an idle port must fail fast, not hang (checks the generator's own error path).
await get(await freePort(), "/", 500).catch(() => {})

const rows = variants.flatMap((variant) => {
  const of = (s: SystemName, k: "p50" | "p99" | "max" | "errors" | "dropped" | "restartsPerS") =>
    stats(samples.filter((x) => x.system === s && x.variant === variant).map((x) => x[k]))
  const raw99 = of("raw", "p99").median
  return systems.map((s) => [
    `${variant} ${s}`,
    fmt(of(s, "p50").median, 2),
    fmt(of(s, "p99").median, 2),
    s !== "raw" && systems.includes("raw") ? `${(of(s, "p99").median / raw99).toFixed(2)}x` : "",
    fmt(of(s, "max").max, 1),
    fmt(of(s, "errors").max, 0),
    fmt(of(s, "dropped").max, 0),
    fmt(of(s, "restartsPerS").median)
  ])
})
const table: Table = {
  title: `Request latency with one worker crash-looping (2 serving, new connection per request, ${rate} req/s)`,
  headers: [
    "variant / system",
    "p50 ms",
    "p99 ms",
    "p99 vs raw",
    "max ms",
    "errors (worst round)",
    "dropped",
    "restarts/s"
  ],
  rows,
  notes: [
    `Open-loop load from this process: ${rate} req/s for ${durationS} s per round, latency from each request's scheduled time; ${rounds} rounds, systems alternating. Medians over rounds.`,
    "steady: 3 serving workers, no crash loop; churn: slot 2 exits 1 at once on every start, restarted with no delay.",
    "dropped: requests not sent because 256 were already in flight. restarts/s: the crash loop's pace during the load.",
    ...beforeNotes(systems, false)
  ]
}
printTable(table)
writeResults("churn-latency", started, [table], { rounds, rate, durationS, systems, variants, samples })
finish()
