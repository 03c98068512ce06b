/**
 * Figure 8 — many children: 500 `sleep` commands supervised.
 *
 * - ours: `Supervisor.start` in command mode (bench/fixtures/ours-many.mjs);
 *   on Linux each child runs through `setpriv --pdeathsig KILL` (the
 *   spawner's default), in its own process group;
 * - raw: a hand-written `child_process.spawn` loop (bench/fixtures/raw-many.cjs);
 * - raw-setpriv: the same loop, each child through `setpriv` as ours does.
 *
 * Reported per system (medians over rounds, systems alternating): time to
 * start all (the primary's stamps: before starting → every child spawned),
 * the primary's CPU time for that, its RSS once all run, its CPU use while
 * idle with all of them running (`--idle-ms`), and the time to stop all
 * (stop requested → every child reaped). The live children are counted from
 * /proc as a check.
 *
 *   node bench/many-children.ts [--children=500] [--rounds=3] [--idle-ms=5000] [--systems=ours,raw,raw-setpriv] [--quick]
 */
import * as Path from "node:path"
import {
  buildOurs,
  childrenOf,
  FIXTURES,
  finish,
  fmt,
  list,
  machine,
  mib,
  note,
  now,
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
import { startPrimary } from "./lib/systems.ts"

requireNode()
const children = num("children", 500, 20)
const rounds = num("rounds", 3, 1)
const idleMs = num("idle-ms", 5000, 500)
const systems = list("systems", ["ours", "raw", "raw-setpriv"])
for (const s of systems) {
  if (s !== "ours" && s !== "raw" && s !== "raw-setpriv")
    throw new Error(`unknown system ${s}: use ours, raw or raw-setpriv`)
}
watchdog(num("timeout", 1800, 300))

const started = machine()
await buildOurs()

type Sample = {
  system: string
  round: number
  startMs: number
  startCpuMs: number
  rssMiB: number
  idleCpuPercent: number
  stopMs: number
  live: number
}
const samples: Array<Sample> = []

for (let round = 0; round < rounds; round++) {
  for (const system of rotate(systems, round)) {
    const running = startPrimary(system, Path.join(FIXTURES, system === "ours" ? "ours-many.mjs" : "raw-many.cjs"), {
      workers: children,
      port: 0,
      workerScript: "",
      env: { BENCH_SETPRIV: system === "raw-setpriv" ? "1" : "0" }
    })
    try {
      const t0 = await running.begin
      const cpu0 = procSample(running.pid())?.cpuMs ?? Number.NaN
      const t1 = await Promise.race([
        running.stamp("started"),
        sleep(120_000).then(() => Promise.reject(new Error(`${system}: not all ${children} started within 120 s`)))
      ])
      const atStart = procSample(running.pid())
      await sleep(1000)
      // Children are direct children of the primary (setpriv execs the command: same pid).
      const live = childrenOf(running.pid()).length
      const beforeIdle = procSample(running.pid())
      const tIdle = now()
      await sleep(idleMs)
      const afterIdle = procSample(running.pid())
      const idleCpuPercent =
        beforeIdle && afterIdle ? ((afterIdle.cpuMs - beforeIdle.cpuMs) / (now() - tIdle)) * 100 : Number.NaN
      const tStop = now()
      const stopped = running.stamp("stopped")
      await running.stop()
      const t2 = await Promise.race([stopped, sleep(1000).then(() => Number.NaN)])
      const sample = {
        system,
        round,
        startMs: t1 - t0,
        startCpuMs: (atStart?.cpuMs ?? Number.NaN) - cpu0,
        rssMiB: mib(afterIdle?.rssKiB ?? Number.NaN),
        idleCpuPercent,
        stopMs: t2 - tStop,
        live
      }
      samples.push(sample)
      note(
        `round ${round + 1}/${rounds} ${system}: start ${fmt(sample.startMs, 0)} ms (CPU ${fmt(sample.startCpuMs, 0)} ms), ` +
          `RSS ${fmt(sample.rssMiB)} MiB, idle CPU ${fmt(idleCpuPercent, 2)} %, stop ${fmt(sample.stopMs, 0)} ms, ${live} live`
      )
    } finally {
      await running.stop()
    }
  }
}

const of = (s: string, k: "startMs" | "startCpuMs" | "rssMiB" | "idleCpuPercent" | "stopMs" | "live") =>
  stats(samples.filter((x) => x.system === s).map((x) => x[k]))
const table: Table = {
  title: `Many children: ${children} \`sleep\` commands supervised`,
  headers: [
    "system",
    "start all ms",
    "p95 ms",
    "ours/peer",
    "primary CPU ms to start",
    "primary RSS MiB",
    "idle CPU %",
    "stop all ms",
    "live children"
  ],
  rows: systems.map((s) => [
    s,
    fmt(of(s, "startMs").median, 0),
    fmt(of(s, "startMs").p95, 0),
    s === "ours" ? "" : `${(of("ours", "startMs").median / of(s, "startMs").median).toFixed(2)}x`,
    fmt(of(s, "startCpuMs").median, 0),
    fmt(of(s, "rssMiB").median),
    fmt(of(s, "idleCpuPercent").median, 2),
    fmt(of(s, "stopMs").median, 0),
    fmt(of(s, "live").min, 0)
  ]),
  notes: [
    `${rounds} round(s), systems alternating. start: the primary's stamp before starting → all spawned; stop: stop requested → all reaped (the primary's stamp).`,
    `RSS after ${idleMs} ms idle with all children running; idle CPU: the primary's user+system time over that idle period. ours/peer compares start times.`,
    "raw: plain spawn, children in the primary's process group; raw-setpriv: each child through setpriv --pdeathsig KILL, as ours on Linux."
  ]
}
printTable(table)
writeResults("many-children", started, [table], { children, rounds, idleMs, systems, samples })
finish()
