/**
 * Figure 13 — what the health machinery costs the primary: its CPU time and
 * RSS with heartbeats and memory sampling on, against off, idle and under
 * load.
 *
 * Variants (ours, module mode, `listen` on the port, `ready: "message"`,
 * bench/fixtures/module-primary.mjs, serving bench/fixtures/fd-worker.cjs):
 * - `off`: no heartbeat, no `maxMemory`;
 * - `on`: `heartbeat: "10 seconds"` (each worker beats every 1 s),
 *   `maxMemory: "1G"` (each worker's group sampled every 5 s, the default);
 * - `aggressive`: `heartbeat: "1 second"` (a beat every 250 ms),
 *   `maxMemory: "1G"`, `memoryInterval: "1 second"`;
 * - on request (`--variants=…`), its halves: `beats-only` (`heartbeat:
 *   "1 second"`) and `memory-only` (`maxMemory: "1G"`, `memoryInterval:
 *   "1 second"`).
 *
 * Each round starts each variant (order rotated) with `--workers` workers
 * (default 8), waits until all are ready and `--settle-s`, then measures two
 * phases of the same primary: idle for `--idle-s`, then under load for
 * `--load-s` (autocannon, keep-alive connections, to the socket the
 * supervisor owns: the workers accept, the primary is not on the request
 * path). Per phase: the primary's CPU time (`process.cpuUsage()` read in the
 * primary at each end, µs) and its RSS (/proc/<pid>/status every second,
 * median). The spread across rounds of `off` is what "within noise" is
 * judged against.
 *
 *   node bench/health-cost.ts [--rounds=5] [--workers=8] [--idle-s=20] [--load-s=20] [--connections=32] [--variants=off,on,aggressive,beats-only,memory-only] [--quick]
 */
import * as Path from "node:path"
import {
  buildOurs,
  ensurePeers,
  finish,
  FIXTURES,
  fmt,
  freePort,
  list,
  machine,
  mib,
  note,
  num,
  printTable,
  procSample,
  requireNode,
  rotate,
  sleep,
  stats,
  type Table,
  watchdog,
  writeResults
} from "./lib/common.ts"
import { autocannon } from "./lib/autocannon.ts"
import { startPrimary } from "./lib/systems.ts"

requireNode()
const rounds = num("rounds", 5, 1)
const workers = num("workers", 8, 2)
const idleS = num("idle-s", 20, 3)
const loadS = num("load-s", 20, 3)
const settleS = num("settle-s", 3, 1)
const connections = num("connections", 32, 8)

const VARIANTS = {
  off: {},
  on: { heartbeat: "10 seconds", maxMemory: "1G" },
  aggressive: { heartbeat: "1 second", maxMemory: "1G", memoryInterval: "1 second" },
  // Not run by default: the two halves of `aggressive`, to tell their costs apart.
  "beats-only": { heartbeat: "1 second" },
  "memory-only": { maxMemory: "1G", memoryInterval: "1 second" }
} as const
type Variant = keyof typeof VARIANTS
const variants = list("variants", ["off", "on", "aggressive"]).map((v) => {
  if (!(v in VARIANTS)) throw new Error(`unknown variant ${v}: use ${Object.keys(VARIANTS).join(", ")}`)
  return v as Variant
})
watchdog(num("timeout", 3600, 300))

const started = machine()
await buildOurs()
ensurePeers()

const FD_WORKER = Path.join(FIXTURES, "fd-worker.cjs")

interface Usage {
  readonly userUs: number
  readonly systemUs: number
  readonly rss: number
  readonly pids: ReadonlyArray<number>
  readonly restarts: number
}

/** RSS of `pid` every second until `stop()`; the readings in KiB. */
const sampleRss = (pid: number) => {
  const readings: Array<number> = []
  const timer = setInterval(() => {
    const s = procSample(pid)
    if (s !== undefined) readings.push(s.rssKiB)
  }, 1000)
  return {
    stop: () => {
      clearInterval(timer)
      return readings
    }
  }
}

interface Sample {
  readonly variant: Variant
  readonly round: number
  /** The primary's CPU time (user + system), ms, over each phase. */
  readonly idleCpuMs: number
  readonly loadCpuMs: number
  /** The primary's RSS, MiB: median of the readings of each phase. */
  readonly idleRssMiB: number
  readonly loadRssMiB: number
  readonly rps: number
  readonly loadErrors: number
  /** Workers restarted (by any cause) during the two phases. */
  readonly restarts: number
  /** Worker pids that changed between the start and the end. */
  readonly replaced: number
}
const samples: Array<Sample> = []

for (let round = 0; round < rounds; round++) {
  for (const variant of rotate(variants, round)) {
    const port = await freePort()
    const running = startPrimary(`ours-${variant}`, Path.join(FIXTURES, "module-primary.mjs"), {
      workers,
      port,
      workerScript: FD_WORKER,
      env: { BENCH_SUPERVISOR_OPTIONS: JSON.stringify(VARIANTS[variant]) }
    })
    try {
      await Promise.race([
        running.stamp("ready"),
        sleep(60_000).then(() => Promise.reject(new Error(`${variant}: workers not ready within 60 s`)))
      ])
      await sleep(settleS * 1000)
      const usage = async () => (await running.request({ type: "usage" })) as unknown as Usage
      const cpuMs = (a: Usage, b: Usage) => (b.userUs + b.systemUs - a.userUs - a.systemUs) / 1000
      const u0 = await usage()
      const idleRss = sampleRss(running.pid())
      await sleep(idleS * 1000)
      const u1 = await usage()
      const idleReadings = idleRss.stop()
      const loadRss = sampleRss(running.pid())
      const cannon = await autocannon(port, loadS, { connections })
      const u2 = await usage()
      const loadReadings = loadRss.stop()
      const sample: Sample = {
        variant,
        round,
        idleCpuMs: cpuMs(u0, u1),
        loadCpuMs: cpuMs(u1, u2),
        idleRssMiB: mib(stats(idleReadings).median),
        loadRssMiB: mib(stats(loadReadings).median),
        rps: cannon.requests.total / loadS,
        loadErrors: cannon.errors + cannon.timeouts + cannon.non2xx,
        restarts: u2.restarts - u0.restarts,
        replaced: u0.pids.filter((p) => !u2.pids.includes(p)).length
      }
      samples.push(sample)
      note(
        `round ${round + 1}/${rounds} ${variant}: CPU idle ${fmt(sample.idleCpuMs)} ms, load ${fmt(sample.loadCpuMs)} ms; ` +
          `RSS idle ${fmt(sample.idleRssMiB)} MiB, load ${fmt(sample.loadRssMiB)} MiB; ${fmt(sample.rps, 0)} req/s, ` +
          `${sample.loadErrors} errors, ${sample.restarts} restarts`
      )
    } finally {
      await running.stop()
    }
  }
}

type Metric = "idleCpuMs" | "loadCpuMs" | "idleRssMiB" | "loadRssMiB"
const values = (v: Variant, k: Metric | "rps") => samples.filter((s) => s.variant === v).map((s) => s[k])
const range = (xs: ReadonlyArray<number>) => {
  const st = stats(xs)
  return `${fmt(st.min)}–${fmt(st.max)}`
}
/** Within noise: the variant's median lies inside the range of `off` across rounds. */
const verdict = (v: Variant, k: Metric): string => {
  if (v === "off" || !variants.includes("off")) return ""
  const off = stats(values("off", k))
  const med = stats(values(v, k)).median
  const delta = med - off.median
  const within = med >= off.min && med <= off.max
  return `${delta >= 0 ? "+" : ""}${fmt(delta)} (${within ? "within" : "outside"} off's spread)`
}
/** `seconds`: the phase's length, for CPU time as a share of one core. */
const metricTable = (
  title: string,
  unit: string,
  k: Metric,
  extra: ReadonlyArray<string>,
  seconds?: number
): Table => ({
  title,
  headers: [
    "variant",
    `median ${unit}`,
    `min–max ${unit} (rounds)`,
    "vs off (median)",
    ...(seconds === undefined ? [] : ["% of a core (median)"]),
    "rounds"
  ],
  rows: variants.map((v) => [
    v,
    fmt(stats(values(v, k)).median),
    range(values(v, k)),
    verdict(v, k),
    ...(seconds === undefined ? [] : [fmt(stats(values(v, k)).median / (10 * seconds), 2)]),
    String(values(v, k).length)
  ]),
  notes: extra
})
const setting = (v: Variant) => (Object.keys(VARIANTS[v]).length === 0 ? "nothing" : JSON.stringify(VARIANTS[v]))
const settings = `Variants: ${variants.map((v) => `${v} = ${setting(v)}`).join("; ")}.`
const tables: Array<Table> = [
  metricTable(
    `Primary CPU time, idle, ${workers} workers, over ${idleS} s`,
    "ms",
    "idleCpuMs",
    [
      settings,
      `${rounds} rounds, variants alternating (order rotated); each round a fresh primary, measured ${settleS} s after all its workers were ready. CPU: process.cpuUsage() in the primary (user + system).`,
      "Within noise: the variant's median lies inside the min–max of `off` across rounds."
    ],
    idleS
  ),
  metricTable(
    `Primary CPU time under load, ${workers} workers, over ${loadS} s (autocannon, ${connections} keep-alive connections, to the socket the supervisor owns)`,
    "ms",
    "loadCpuMs",
    [
      "The primary is not on the request path (the workers accept on the socket it owns): under load it pays for heartbeats and samples while the cores are busy."
    ],
    loadS
  ),
  metricTable(`Primary RSS, idle (median of readings every 1 s)`, "MiB", "idleRssMiB", []),
  metricTable(`Primary RSS under load (median of readings every 1 s)`, "MiB", "loadRssMiB", []),
  {
    title: "Under load: throughput through the workers, and restarts",
    headers: [
      "variant",
      "median req/s",
      "min–max req/s",
      "load errors (max)",
      "restarts (all rounds)",
      "pids replaced"
    ],
    rows: variants.map((v) => {
      const mine = samples.filter((s) => s.variant === v)
      return [
        v,
        fmt(stats(values(v, "rps")).median, 0),
        `${fmt(stats(values(v, "rps")).min, 0)}–${fmt(stats(values(v, "rps")).max, 0)}`,
        fmt(stats(mine.map((s) => s.loadErrors)).max, 0),
        String(mine.reduce((a, s) => a + s.restarts, 0)),
        String(mine.reduce((a, s) => a + s.replaced, 0))
      ]
    }),
    notes: [
      "The load generator shares the machine's cores with the workers and the primary. A restart here would be a worker judged unresponsive or recycled for memory (none should be)."
    ]
  }
]
for (const t of tables) printTable(t)
// Another choice of variants (the halves, say) writes its own files, so it never replaces the figure's.
const defaultVariants = variants.join(",") === "off,on,aggressive"
writeResults(defaultVariants ? "health-cost" : `health-cost-${variants.join("-")}`, started, tables, {
  rounds,
  workers,
  idleS,
  loadS,
  settleS,
  connections,
  variants: Object.fromEntries(variants.map((v) => [v, VARIANTS[v]])),
  samples
})
finish()
