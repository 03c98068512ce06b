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
 * Builds: `ours` runs this tree's src/ (through Node's type stripping);
 * with `--before=REF` (which `npm run bench -- --before=REF` passes on) the
 * child runs are repeated with `before`, the src/ of commit REF
 * (bench/lib/before.ts, $BENCH_BEFORE_SRC), the two alternating.
 *
 *   node bench/supervisor-cost.ts [--slots=1000,10000,100000] [--events=20000] [--batch=1000] [--rounds=3] [--logger=discard|none] [--before=REF] [--quick]
 */
import { spawnSync } from "node:child_process"
import * as Path from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"
import { Deferred, Effect, Logger } from "effect"
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
  ROOT,
  rotate,
  stats,
  str,
  type Table,
  watchdog,
  writeResults
} from "./lib/common.ts"
import { beforeFromFlag } from "./lib/before.ts"

requireNode()
await beforeFromFlag()
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

/** The library's modules a run measures, from the src/ directory of a build. */
interface Library {
  readonly ExitStatus: typeof import("../src/ExitStatus.ts")
  readonly Supervisor: typeof import("../src/Supervisor.ts")
  readonly TestSpawner: typeof import("../src/testing/TestSpawner.ts")
}

const load = async (src: string): Promise<Library> => {
  const from = (module: string) => import(pathToFileURL(Path.join(src, module)).href)
  return {
    ExitStatus: await from("ExitStatus.ts"),
    Supervisor: await from("Supervisor.ts"),
    TestSpawner: await from("testing/TestSpawner.ts")
  }
}

const measure = ({ ExitStatus, Supervisor, TestSpawner }: Library, slots: number): Effect.Effect<Measure, unknown> => {
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
  // A child run: one slot count, one build (its src/ in BENCH_COST_SRC), result as JSON on stdout.
  const library = await load(process.env.BENCH_COST_SRC || Path.join(ROOT, "src"))
  const m = await Effect.runPromise(measure(library, child))
  out(JSON.stringify(m))
  process.exit(0)
}

const slotCounts = numList("slots", [1000, 10_000, 100_000], [100, 1000])
const rounds = num("rounds", 3, 1)
watchdog(num("timeout", 3600, 300))
const started = machine()
const self = fileURLToPath(import.meta.url)
/** The builds measured: this tree's src/, and the "before" commit's when `--before` built it. */
const builds: ReadonlyArray<{ readonly name: string; readonly src: string }> = [
  { name: "ours", src: Path.join(ROOT, "src") },
  ...(process.env.BENCH_BEFORE_SRC ? [{ name: "before", src: process.env.BENCH_BEFORE_SRC }] : [])
]
const samples: Array<Measure & { round: number; build: string }> = []

for (let round = 0; round < rounds; round++) {
  for (const [slots, build] of rotate(
    slotCounts.flatMap((slots) => builds.map((build) => [slots, build] as const)),
    round
  )) {
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
      {
        encoding: "utf8",
        timeout: 20 * 60_000,
        maxBuffer: 16 * 2 ** 20,
        env: { ...process.env, BENCH_QUICK: "", BENCH_COST_SRC: build.src }
      }
    )
    const line = r.stdout.trim().split("\n").at(-1) ?? ""
    let m: Measure
    try {
      m = JSON.parse(line) as Measure
    } catch {
      throw new Error(
        `child for ${slots} slots (${build.name}) failed (${r.status ?? r.signal}): ${r.stderr.slice(-2000)}`
      )
    }
    samples.push({ ...m, round, build: build.name })
    note(
      `round ${round + 1}/${rounds} ${build.name} S=${slots}: start ${fmt(m.startUsPerSlot)} µs/slot, event ${fmt(m.seqUsPerEvent)} µs sequential, ` +
        `${fmt(m.batchUsPerEvent)} µs batched, stop ${fmt(m.stopUsPerSlot)} µs/slot, heap ${fmt(m.heapBytesPerEvent, 0)} B/event`
    )
  }
}

const of = (slots: number, k: keyof Measure, build = "ours") =>
  stats(samples.filter((s) => s.slots === slots && s.build === build).map((s) => s[k]))
const smallest = Math.min(...slotCounts)
const withBefore = builds.length > 1
const table: Table = {
  title: `Supervisor cost per lifecycle event, in-memory test spawner (${events.toLocaleString("en-US")} events per run, logger: ${loggerMode})`,
  headers: [
    withBefore ? "slots, build" : "slots",
    "event µs (sequential)",
    `vs ${smallest.toLocaleString("en-US")}`,
    "event µs (batches)",
    `vs ${smallest.toLocaleString("en-US")}`,
    "start µs/slot",
    "stop µs/slot",
    "heap B/slot",
    "heap B/event",
    ...(withBefore ? ["ours/before (sequential)"] : []),
    "runs"
  ],
  rows: slotCounts.flatMap((slots) =>
    builds.map(({ name }) => [
      withBefore ? `${slots.toLocaleString("en-US")} ${name}` : slots.toLocaleString("en-US"),
      fmt(of(slots, "seqUsPerEvent", name).median),
      `${(of(slots, "seqUsPerEvent", name).median / of(smallest, "seqUsPerEvent", name).median).toFixed(2)}x`,
      fmt(of(slots, "batchUsPerEvent", name).median),
      `${(of(slots, "batchUsPerEvent", name).median / of(smallest, "batchUsPerEvent", name).median).toFixed(2)}x`,
      fmt(of(slots, "startUsPerSlot", name).median),
      fmt(of(slots, "stopUsPerSlot", name).median),
      fmt(of(slots, "heapBytesPerSlot", name).median, 0),
      fmt(of(slots, "heapBytesPerEvent", name).median, 0),
      ...(withBefore
        ? [
            name === "ours"
              ? ""
              : `${(of(slots, "seqUsPerEvent").median / of(slots, "seqUsPerEvent", name).median).toFixed(2)}x`
          ]
        : []),
      String(of(slots, "seqUsPerEvent", name).n)
    ])
  ),
  notes: [
    "event: a worker exits 1 → its replacement is spawned (classify, log, publish, budget step, yield, spawn). Medians over runs; each run a fresh process.",
    `batches: ${batch} exits at once, then all replacements awaited. heap B/event includes the test spawner's record of every process it spawned.`,
    ...(withBefore
      ? [
          `before: the src/ of ${process.env.BENCH_BEFORE_REF ?? "?"} (--before), run the same way, builds alternating; vs ${smallest.toLocaleString("en-US")}: within the same build.`
        ]
      : [])
  ]
}
printTable(table)
writeResults(`supervisor-cost${loggerMode === "none" ? "-nolog" : ""}`, started, [table], {
  slotCounts,
  events,
  batch,
  rounds,
  logger: loggerMode,
  builds,
  samples
})
void list
finish()
