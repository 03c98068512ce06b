/**
 * Figure 7 — the supervisor's own cost, without a single OS process: the
 * in-memory test spawner (src/testing/TestSpawner.ts) plays the workers, and
 * the benchmark ends them programmatically. The cost per lifecycle event
 * (a worker exits abnormally → the supervisor classifies it, logs it,
 * publishes it, steps the budget, yields and spawns the replacement) must
 * stay flat as the slot count grows.
 *
 * For each slot count S (default 1,000, 10,000 and 100,000), in a fresh
 * child process per (round, S), sizes alternating:
 * - start: `Supervisor.start` with S slots until all S are spawned (µs per slot);
 * - sequential: `--events` exits one at a time, each awaited until its
 *   replacement is spawned (µs per event: latency of one restart);
 * - batch: the same number of exits in batches of `--batch`, each batch
 *   awaited (µs per event: throughput);
 * - stop: `handle.stop` with all S slots live (µs per slot);
 * - heap: growth per event, after a full GC (includes the test spawner's own
 *   records of every process it ever spawned).
 * Logging: `--logger=discard` (default) formats every line with logfmt and
 * drops it; `--logger=none` installs no logger (the supervisor alone).
 *
 *   node bench/supervisor-cost.ts [--slots=1000,10000,100000] [--events=20000] [--batch=1000] [--rounds=3] [--logger=discard|none] [--quick]
 */
import { spawnSync } from "node:child_process"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import { Deferred, Effect, Logger } from "effect"
import * as ExitStatus from "../src/ExitStatus.ts"
import * as Supervisor from "../src/Supervisor.ts"
import * as TestSpawner from "../src/testing/TestSpawner.ts"
import {
  finish,
  fmt,
  list,
  machine,
  note,
  now,
  num,
  numList,
  out,
  printTable,
  requireNode,
  rotate,
  stats,
  str,
  type Table,
  watchdog,
  writeResults
} from "./lib/common.ts"

requireNode()
const child = num("child", 0, 0)
const events = num("events", 20_000, 500)
const batch = num("batch", 1000, 100)
const loggerMode = str("logger", "discard")

interface Measure {
  readonly slots: number
  readonly startUsPerSlot: number
  readonly seqUsPerEvent: number
  readonly batchUsPerEvent: number
  readonly stopUsPerSlot: number
  readonly heapBytesPerEvent: number
  readonly heapBytesPerSlot: number
}

const gcHeap = (): number => {
  const gc = (globalThis as { gc?: () => void }).gc
  gc?.()
  gc?.()
  return process.memoryUsage().heapUsed
}

const measure = (slots: number): Effect.Effect<Measure, unknown> => {
  const current = new Int32Array(slots)
  let spawned = 0
  let target = Number.POSITIVE_INFINITY
  let waiter: Deferred.Deferred<void> | undefined
  const layer = TestSpawner.layer({
    script: (p) => {
      current[p.taskId] = p.pid
      spawned++
      if (waiter !== undefined && spawned >= target) {
        const w = waiter
        waiter = undefined
        Deferred.doneUnsafe(w, Effect.void)
      }
      return undefined
    }
  })
  const spawnedAtLeast = (n: number): Effect.Effect<void> =>
    Effect.suspend(() => {
      if (spawned >= n) return Effect.void
      target = n
      const d = Deferred.makeUnsafe<void>()
      waiter = d
      return Deferred.await(d)
    })
  const loggers =
    loggerMode === "none"
      ? Logger.layer([])
      : Logger.layer([Logger.map(Logger.formatLogFmt, (_line: string) => undefined)])
  const crash = ExitStatus.exited(1)

  return Effect.gen(function* () {
    const control = yield* TestSpawner.TestSpawner
    const heap0 = gcHeap()
    const t0 = now()
    const handle = yield* Supervisor.start({
      processes: slots,
      command: "bench-worker",
      maxRestarts: Infinity,
      stdio: "ignore"
    })
    yield* spawnedAtLeast(slots)
    const tUp = now()
    const heap1 = gcHeap()
    const t1 = now()
    // Sequential: one exit at a time, each until its replacement is spawned.
    let k = 0
    for (let i = 0; i < events; i++, k++) {
      const slot = (k * 7919) % slots
      yield* control.exit(current[slot]!, crash)
      yield* spawnedAtLeast(slots + k + 1)
    }
    const t2 = now()
    // Batches: `batch` exits at once (distinct slots), then wait for all replacements.
    const width = Math.min(batch, slots)
    for (let done = 0; done < events; done += width) {
      const n = Math.min(width, events - done)
      const first = k
      for (let j = 0; j < n; j++, k++) yield* control.exit(current[(first + j) % slots]!, crash)
      yield* spawnedAtLeast(slots + k)
    }
    const t3 = now()
    const heap2 = gcHeap()
    const tStop = now()
    yield* handle.stop
    const t4 = now()
    return {
      slots,
      startUsPerSlot: ((tUp - t0) * 1000) / slots,
      seqUsPerEvent: ((t2 - t1) * 1000) / events,
      batchUsPerEvent: ((t3 - t2) * 1000) / events,
      stopUsPerSlot: ((t4 - tStop) * 1000) / slots,
      heapBytesPerEvent: (heap2 - heap1) / (2 * events),
      heapBytesPerSlot: (heap1 - heap0) / slots
    }
  }).pipe(Effect.scoped, Effect.provide(layer), Effect.provide(loggers))
}

if (child > 0) {
  // A child run: one slot count, result as JSON on stdout.
  const m = await Effect.runPromise(measure(child))
  out(JSON.stringify(m))
  process.exit(0)
}

const slotCounts = numList("slots", [1000, 10_000, 100_000], [100, 1000])
const rounds = num("rounds", 3, 1)
watchdog(num("timeout", 3600, 300))
const started = machine()
const self = fileURLToPath(import.meta.url)
const samples: Array<Measure & { round: number }> = []

for (let round = 0; round < rounds; round++) {
  for (const slots of rotate(slotCounts, round)) {
    const r = spawnSync(
      process.execPath,
      [
        "--expose-gc",
        "--max-old-space-size=8192",
        self,
        `--child=${slots}`,
        `--events=${events}`,
        `--batch=${batch}`,
        `--logger=${loggerMode}`
      ],
      { encoding: "utf8", timeout: 20 * 60_000, maxBuffer: 16 * 2 ** 20, env: { ...process.env, BENCH_QUICK: "" } }
    )
    const line = r.stdout.trim().split("\n").at(-1) ?? ""
    let m: Measure
    try {
      m = JSON.parse(line) as Measure
    } catch {
      throw new Error(`child for ${slots} slots failed (${r.status ?? r.signal}): ${r.stderr.slice(-2000)}`)
    }
    samples.push({ ...m, round })
    note(
      `round ${round + 1}/${rounds} S=${slots}: start ${fmt(m.startUsPerSlot)} µs/slot, event ${fmt(m.seqUsPerEvent)} µs sequential, ` +
        `${fmt(m.batchUsPerEvent)} µs batched, stop ${fmt(m.stopUsPerSlot)} µs/slot, heap ${fmt(m.heapBytesPerEvent, 0)} B/event`
    )
  }
}

const of = (slots: number, k: keyof Measure) => stats(samples.filter((s) => s.slots === slots).map((s) => s[k]))
const smallest = Math.min(...slotCounts)
const table: Table = {
  title: `Supervisor cost per lifecycle event, in-memory test spawner (${events.toLocaleString("en-US")} events per run, logger: ${loggerMode})`,
  headers: [
    "slots",
    "event µs (sequential)",
    `vs ${smallest.toLocaleString("en-US")}`,
    "event µs (batches)",
    `vs ${smallest.toLocaleString("en-US")}`,
    "start µs/slot",
    "stop µs/slot",
    "heap B/slot",
    "heap B/event",
    "runs"
  ],
  rows: slotCounts.map((slots) =>
    [
      slots.toLocaleString("en-US"),
      fmt(of(slots, "seqUsPerEvent").median),
      `${(of(slots, "seqUsPerEvent").median / of(smallest, "seqUsPerEvent").median).toFixed(2)}x`,
      fmt(of(slots, "batchUsPerEvent").median),
      `${(of(slots, "batchUsPerEvent").median / of(smallest, "batchUsPerEvent").median).toFixed(2)}x`,
      fmt(of(slots, "startUsPerSlot").median),
      fmt(of(slots, "stopUsPerSlot").median),
      fmt(of(slots, "heapBytesPerSlot").median, 0),
      fmt(of(slots, "heapBytesPerEvent").median, 0)
    ].concat(String(of(slots, "seqUsPerEvent").n))
  ),
  notes: [
    "event: a worker exits 1 → its replacement is spawned (classify, log, publish, budget step, yield, spawn). Medians over runs; each run a fresh process.",
    `batches: ${batch} exits at once, then all replacements awaited. heap B/event includes the test spawner's record of every process it spawned.`
  ]
}
printTable(table)
writeResults(`supervisor-cost${loggerMode === "none" ? "-nolog" : ""}`, started, [table], {
  slotCounts,
  events,
  batch,
  rounds,
  logger: loggerMode,
  samples
})
void list
finish()
