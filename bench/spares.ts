/**
 * Figure 12 — warm spares: restart latency for a worker whose start-up is
 * dominated by loading its code, when a spare (booted ahead, code loaded,
 * waiting for a task id) takes the dead worker's place.
 *
 * The worker (bench/fixtures/slow-worker.mjs) imports a generated module
 * graph: `--modules` small modules (each a frozen table, a class with six
 * methods, a helper, two or three imports of others) written to
 * bench/.scratch/slow-graph, ~100 ms to import on the machine of
 * docs/benchmarks.md; the real figure is measured in every worker and
 * reported. It then awaits `Worker.activated()` and serves HTTP.
 *
 * The systems, alternating round by round (order rotated):
 * - `ours-spare`: `Supervisor.start`, module mode, `listen` on the port,
 *   `ready: "message"`, `spares: 1` (bench/fixtures/module-primary.mjs);
 * - `ours-cold`: the same without spares (a cold restart);
 * - `raw`: the hand-written node:cluster loop (bench/fixtures/raw-primary.cjs).
 *
 * Each round starts each system with `--workers` workers (default 1), then
 * crashes a worker `--crashes` times as bench/restart.ts does: `GET /crash`
 * makes it answer, stamp the time and exit 1; new-connection GETs every ms
 * (from 2 ms after the crash answer: restart.ts waits 20, too long for a
 * spare) until a pid not seen before answers; latency = that answer − the
 * stamp. With the socket ours owns, probes sent while no worker serves wait
 * in its backlog; raw node:cluster refuses them until its new worker listens.
 * Before each crash of `ours-spare`, the benchmark waits until a spare has
 * finished loading (its `loaded-<pid>` stamp), so every crash finds a warm
 * spare; the table says how many replacements were spares.
 *
 *   node bench/spares.ts [--rounds=5] [--crashes=6] [--workers=1] [--modules=120] [--systems=ours-spare,ours-cold,raw] [--quick]
 */
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import * as Path from "node:path"
import {
  buildOurs,
  finish,
  FIXTURES,
  fmt,
  freePort,
  get,
  list,
  machine,
  note,
  num,
  onCleanup,
  OURS_DIST,
  percentile,
  pidOf,
  printTable,
  probeUntil,
  ratio,
  readStamp,
  requireNode,
  rotate,
  SCRATCH,
  scratchDir,
  sleep,
  stats,
  type Table,
  waitFor,
  watchdog,
  writeResults
} from "./lib/common.ts"
import { startPrimary } from "./lib/systems.ts"

requireNode()
const rounds = num("rounds", 5, 1)
const crashes = num("crashes", 6, 2)
const workers = num("workers", 1, 1)
const modules = num("modules", 120, 120)
const settleMs = num("settle-ms", 150, 50)
/**
 * Probing starts this long after the crash answer. Short (restart.ts waits 20 ms): a spare answers within
 * tens of ms, and an answer from the dying worker is told apart by its pid anyway.
 */
const probeDelayMs = num("probe-delay-ms", 2, 2)
/** A replacement not answering within this is counted as a restart that never came. */
const restartTimeoutMs = num("restart-timeout-ms", 10_000, 10_000)
/** How long to wait for a spare to finish loading before a crash. */
const spareTimeoutMs = num("spare-timeout-ms", 20_000, 20_000)
const target = num("target", 0.2, 0.2)
const SYSTEMS = ["ours-spare", "ours-cold", "raw"] as const
type System = (typeof SYSTEMS)[number]
const systems = list("systems", SYSTEMS).map((s) => {
  if (!(SYSTEMS as ReadonlyArray<string>).includes(s)) throw new Error(`unknown system ${s}: use ${SYSTEMS.join(", ")}`)
  return s as System
})
watchdog(num("timeout", 1800, 300))

const started = machine()
await buildOurs()

// ---------------------------------------------------------------------------
// The worker's code: a generated module graph, and effect-prefork's Worker bundled

const GRAPH_DIR = Path.join(SCRATCH, "slow-graph", String(modules))

/** Module i imports 2i+1, 2i+2 and i+7 (those that exist): a DAG every module of which m0 reaches. */
const moduleSource = (i: number): string => {
  const deps = [2 * i + 1, 2 * i + 2, i + 7].filter((d, k, all) => d < modules && all.indexOf(d) === k)
  const lines: Array<string> = deps.map((d) => `import { Service${d}, helper${d} } from "./m${d}.mjs"`)
  lines.push("const TABLE = Object.freeze({")
  for (let k = 0; k < 24; k++) {
    lines.push(
      `  key${k}: { id: ${k}, name: "entry-${i}-${k}", weight: ${(k * 37 + i) % 101}, tags: ["a${k % 5}", "b${k % 7}"] },`
    )
  }
  lines.push("})")
  lines.push(`export const helper${i} = (x) => {`)
  lines.push(`  let acc = ${i}`)
  lines.push("  for (const [k, v] of Object.entries(TABLE)) if (v.weight > x) acc += k.length * v.id")
  lines.push(`  return acc${deps.length > 0 ? ` + helper${deps[0]}(x % 3)` : ""}`)
  lines.push("}")
  lines.push(`export class Service${i} {`)
  lines.push("  #cache = new Map()")
  lines.push("  constructor(options = {}) { this.options = { retries: 3, timeout: 1000, ...options } }")
  for (let k = 0; k < 6; k++) {
    lines.push(`  method${k}(input) {`)
    lines.push(`    const key = \`\${input}:${k}\``)
    lines.push("    if (this.#cache.has(key)) return this.#cache.get(key)")
    lines.push(
      `    const value = typeof input === "number" ? input * ${k + 1} + helper${i}(input) : String(input).split("").reverse().join("")`
    )
    lines.push("    this.#cache.set(key, value)")
    lines.push("    return value")
    lines.push("  }")
  }
  lines.push(
    `  static describe() { return { name: "Service${i}", deps: [${deps.map((d) => `Service${d}.name`).join(", ")}] } }`
  )
  lines.push("}")
  lines.push(`export const registry${i} = new Map([${deps.map((d) => `["s${d}", Service${d}]`).join(", ")}])`)
  lines.push(`export const ready${i} = helper${i}(${i % 50})`)
  return `${lines.join("\n")}\n`
}

rmSync(GRAPH_DIR, { recursive: true, force: true })
mkdirSync(GRAPH_DIR, { recursive: true })
for (let i = 0; i < modules; i++) writeFileSync(Path.join(GRAPH_DIR, `m${i}.mjs`), moduleSource(i))
writeFileSync(Path.join(GRAPH_DIR, "index.mjs"), 'export * as root from "./m0.mjs"\n')

/** `Worker.activated` from the compiled package, bundled with the Effect it needs into one file. */
const WORKER_LIB = Path.join(scratchDir("bundles"), "worker-activated.mjs")
{
  const entry = Path.join(scratchDir("bundles"), "worker-activated-entry.mjs")
  writeFileSync(entry, `export { activated } from ${JSON.stringify(Path.join(OURS_DIST, "Worker.js"))}\n`)
  const { rolldown } = await import("rolldown")
  const bundle = await rolldown({ input: entry, platform: "node", logLevel: "warn" })
  await bundle.write({
    file: WORKER_LIB,
    format: "esm",
    codeSplitting: false,
    minify: { compress: true, mangle: false, codegen: { removeWhitespace: true } }
  })
  await bundle.close()
}

// ---------------------------------------------------------------------------

const SLOW_WORKER = Path.join(FIXTURES, "slow-worker.mjs")
const stampRoot = scratchDir(`spares-stamps-${process.pid}`)
onCleanup(() => rmSync(stampRoot, { recursive: true, force: true }))

interface Sample {
  readonly system: System
  readonly round: number
  readonly latency: number
  /** The replacement was started as a spare. */
  readonly spare: boolean
}
interface Load {
  readonly system: System
  readonly importMs: number
  readonly bootMs: number
  readonly spare: boolean
}
const samples: Array<Sample> = []
const loads: Array<Load> = []
const failures: Array<string> = []

const readJson = (file: string): Record<string, any> | undefined => {
  try {
    return JSON.parse(readFileSync(file, "utf8")) as Record<string, any>
  } catch {
    return undefined
  }
}

/** The workers of a run that have finished loading, with what they stamped. */
const loadedIn = (dir: string): Map<number, Record<string, any>> => {
  const found = new Map<number, Record<string, any>>()
  for (const f of readdirSync(dir)) {
    if (!f.startsWith("loaded-")) continue
    const j = readJson(Path.join(dir, f))
    if (j !== undefined) found.set(Number(f.slice(7)), j)
  }
  return found
}

const start = (system: System, port: number, stampDir: string) =>
  startPrimary(system, Path.join(FIXTURES, system === "raw" ? "raw-primary.cjs" : "module-primary.mjs"), {
    workers,
    port,
    workerScript: SLOW_WORKER,
    env: {
      BENCH_STAMP_DIR: stampDir,
      BENCH_GRAPH_DIR: GRAPH_DIR,
      BENCH_WORKER_LIB: WORKER_LIB,
      BENCH_SUPERVISOR_OPTIONS: JSON.stringify(system === "ours-spare" ? { spares: 1 } : {})
    }
  })

for (let round = 0; round < rounds; round++) {
  for (const system of rotate(systems, round)) {
    const stampDir = Path.join(stampRoot, `${system}-${round}`)
    mkdirSync(stampDir, { recursive: true })
    const port = await freePort()
    const running = start(system, port, stampDir)
    /** Every pid that ever answered in this run: a spare that has not is still waiting. */
    const served = new Set<number>()
    const known = new Set<number>()
    const learn = () =>
      probeUntil(
        port,
        (pid) => {
          known.add(pid)
          served.add(pid)
          return known.size >= workers
        },
        { timeoutMs: 30_000, inFlight: Math.max(4, workers) }
      )
    const awaitSpare = () =>
      system === "ours-spare"
        ? waitFor(
            "a spare that has loaded its code",
            () => {
              for (const [pid, j] of loadedIn(stampDir)) if (j.spare === true && !served.has(pid)) return pid
              return undefined
            },
            spareTimeoutMs
          )
        : Promise.resolve(0)
    try {
      await learn()
      await awaitSpare()
      await sleep(settleMs)
      for (let c = 0; c < crashes; c++) {
        let crashed: number | undefined
        try {
          const answer = await get(port, "/crash", 5000)
          crashed = pidOf(answer)
          if (crashed === undefined) throw new Error(`/crash answered ${answer.status} ${answer.body}`)
          const gone = crashed
          await sleep(probeDelayMs)
          let replacement = 0
          const at = await probeUntil(
            port,
            (pid) => {
              if (pid === gone || known.has(pid)) return false
              replacement = pid
              return true
            },
            { timeoutMs: restartTimeoutMs, every: 1, inFlight: 4 }
          )
          const stamp = await readStamp(stampDir, gone)
          served.add(replacement)
          const spare = readJson(Path.join(stampDir, `loaded-${replacement}`))?.spare === true
          samples.push({ system, round, latency: at - stamp, spare })
        } catch (error) {
          failures.push(`${system} round ${round + 1} crash ${c + 1}: ${String(error)}`)
          note(`${failures.at(-1)!}; ending this system's round`)
          break
        }
        if (crashed !== undefined) known.delete(crashed)
        await learn().catch(() => {})
        await awaitSpare().catch((error) => note(`${system} round ${round + 1}: ${String(error)}`))
        await sleep(settleMs)
      }
      const mine = samples.filter((s) => s.system === system && s.round === round)
      note(
        `round ${round + 1}/${rounds} ${system}: median ${fmt(stats(mine.map((s) => s.latency)).median)} ms over ${mine.length} crashes` +
          (system === "ours-spare" ? ` (${mine.filter((s) => s.spare).length} by a spare)` : "")
      )
    } finally {
      await running.stop()
      for (const j of loadedIn(stampDir).values()) {
        loads.push({ system, importMs: Number(j.importMs), bootMs: Number(j.bootMs), spare: j.spare === true })
      }
    }
  }
}
rmSync(stampRoot, { recursive: true, force: true })

const of = (s: System) => samples.filter((x) => x.system === s).map((x) => x.latency)
const rawMedian = stats(of("raw")).median
const spareMedian = stats(of("ours-spare")).median
const allLoads = loads.map((l) => l.importMs)
const table: Table = {
  title: `Restart latency with a warm spare: crash (the worker's stamp) → replacement answering HTTP (N=${workers}, a worker importing ${modules} modules)`,
  headers: ["system", "median ms", "p90 ms", "min ms", "max ms", "samples", "vs raw (median)", "replaced by a spare"],
  rows: systems.map((s) => {
    const st = stats(of(s))
    const mine = samples.filter((x) => x.system === s)
    return [
      s,
      fmt(st.median),
      fmt(percentile(of(s), 0.9)),
      fmt(st.min),
      fmt(st.max),
      String(st.n),
      s === "raw" ? "" : ratio(st.median, rawMedian),
      s === "raw" ? "" : `${mine.filter((x) => x.spare).length}/${mine.length}`
    ]
  }),
  notes: [
    `${rounds} rounds × ${crashes} crashes per system, systems alternating; probes are new-connection GETs every 1 ms, from ${probeDelayMs} ms after the crash answer.`,
    `ours-spare: before each crash a spare had finished loading; target ours-spare ≤ ${target}× raw's median: ${
      Number.isFinite(spareMedian) && Number.isFinite(rawMedian)
        ? `${(spareMedian / rawMedian).toFixed(2)}× (${spareMedian / rawMedian <= target ? "met" : "missed"})`
        : "not measured"
    }.`,
    `The worker's imports (the generated graph and the bundled Worker): median ${fmt(stats(allLoads).median)} ms, p90 ${fmt(percentile(allLoads, 0.9))} ms over ${allLoads.length} workers; process start → imports done ${fmt(stats(loads.map((l) => l.bootMs)).median)} ms (table below).`,
    ...systems.flatMap((s) => {
      const n = failures.filter((f) => f.startsWith(`${s} `)).length
      return n > 0 ? [`${s}: ${n} crash(es) with no replacement answering (see the JSON for each)`] : []
    })
  ]
}
const loadTable: Table = {
  title: "The worker's load, as each worker measured it",
  headers: ["system", "workers", "imports median ms", "imports p90 ms", "start → loaded median ms", "spares"],
  rows: systems.map((s) => {
    const mine = loads.filter((l) => l.system === s)
    return [
      s,
      String(mine.length),
      fmt(stats(mine.map((l) => l.importMs)).median),
      fmt(
        percentile(
          mine.map((l) => l.importMs),
          0.9
        )
      ),
      fmt(stats(mine.map((l) => l.bootMs)).median),
      String(mine.filter((l) => l.spare).length)
    ]
  }),
  notes: [
    "imports: `await import()` of the generated graph and of the bundled `Worker.activated`; start → loaded: from the process's time origin (Node's start) to the end of those imports. Spares load while another worker serves, so they share the cores with it."
  ]
}
printTable(table)
printTable(loadTable)
writeResults("spares", started, [table, loadTable], {
  rounds,
  crashes,
  workers,
  modules,
  systems,
  target,
  samples,
  loads,
  failures
})
finish()
