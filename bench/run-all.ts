/**
 * `npm run bench`: every benchmark, one after the other, each in its own
 * process, at full size (or `--quick` / BENCH_QUICK=1 for a smoke run). Then
 * bench/results/summary.md gathers their markdown fragments in order.
 *
 *   node bench/run-all.ts [--quick] [--only=startup,restart,...] [--skip=...] [--before=REF]
 *   npm run bench -- --before=4fdb599
 *
 * `--before=REF` builds the package at git commit REF once
 * (bench/lib/before.ts, into bench/.scratch/before/REF) and every benchmark
 * that can runs it beside this tree's build: systems `before` and
 * `before-bundled` (startup, restart, memory, churn-latency, churn),
 * `prefork-before` (cli), bundle `before` (churn-cli), build `before`
 * (supervisor-cost). The summary names the commit.
 *
 * Any other BENCH_* variable reaches every benchmark (e.g. BENCH_ROUNDS=3).
 */
import { spawn } from "node:child_process"
import { existsSync, readFileSync, writeFileSync } from "node:fs"
import * as Path from "node:path"
import {
  BENCH,
  buildOurs,
  ensurePeers,
  finish,
  formatFiles,
  list,
  machine,
  machineLine,
  note,
  out,
  QUICK,
  requireNode,
  RESULTS,
  str,
  track
} from "./lib/common.ts"
import { type Before, prepareBefore } from "./lib/before.ts"

requireNode()

/** In the order of the figures: [script, result fragment(s)]. */
const BENCHMARKS: ReadonlyArray<readonly [string, ReadonlyArray<string>, ReadonlyArray<string>]> = [
  ["startup", ["startup"], []],
  ["restart", ["restart"], []],
  ["memory", ["memory"], []],
  ["throughput", ["throughput"], []],
  ["throughput", ["throughput-new-connections"], ["--new-connections"]],
  ["churn-latency", ["churn-latency"], []],
  [
    "churn-latency",
    ["churn-latency-semi1"],
    [
      "--variants=churn",
      "--systems=ours-bundled,raw",
      "--primary-node-args=--max-semi-space-size=1",
      "--result=churn-latency-semi1"
    ]
  ],
  ["churn", ["churn"], []],
  // The same with V8's young generation bounded, the flag production.md discusses (its own fragment).
  [
    "churn",
    ["churn-semi1"],
    [
      "--restarts=2000",
      "--systems=ours-bundled,raw",
      "--primary-node-args=--max-semi-space-size=1",
      "--result=churn-semi1"
    ]
  ],
  ["supervisor-cost", ["supervisor-cost"], []],
  ["many-children", ["many-children"], []],
  ["import-cost", ["import-cost"], []],
  ["cli", ["cli"], []],
  ["cli-cluster", ["cli-cluster"], []],
  ["churn-cli", ["churn-cli"], []],
  ["sockets", ["sockets"], []],
  ["spares", ["spares"], []],
  ["health-cost", ["health-cost"], []],
  ["control-abuse", ["control-abuse"], []],
  ["metrics-abuse", ["metrics-abuse"], []],
  // One round of its 36 runs (3 apps × 4 supervisors × 3 events): failures are counts, about 10 minutes.
  ["drain", ["drain"], ["--rounds=1"]]
]

const only = list("only", [])
const skip = list("skip", [])
const selected = BENCHMARKS.filter(
  ([name, fragments]) =>
    (only.length === 0 || only.includes(name) || fragments.some((f) => only.includes(f))) &&
    !skip.includes(name) &&
    !fragments.some((f) => skip.includes(f))
)

const m = machine()
out(`Machine: ${machineLine(m)}`)
if (m.loadAverage[0]! > 0.5) {
  note(`the 1-minute load average is ${m.loadAverage[0]}: the machine is not quiet, figures will be noisy`)
}
// Once here, so each benchmark can skip it.
await buildOurs()
ensurePeers()
// Once here too: its paths reach every benchmark through the environment.
const beforeRef = str("before", "")
const before: Before | undefined = beforeRef === "" ? undefined : await prepareBefore(beforeRef)
const beforeLine =
  before === undefined
    ? ""
    : `Before: \`${before.ref}\` (${before.commit.slice(0, 7)}, "${before.subject}"), built by bench/lib/before.ts and run beside this tree's build (rows \`before\`, \`before-bundled\`, \`prefork-before\`).\n\n`
if (before !== undefined) out(beforeLine.trim())

const statuses: Array<string> = []
const t0 = Date.now()
for (const [name, fragments, args] of selected) {
  out(`\n=== ${name} ${args.join(" ")} ===`)
  const started = Date.now()
  // Asynchronously, so a signal to this process is handled (cleanup kills the benchmark and all it started).
  const child = track(
    spawn(process.execPath, [Path.join(BENCH, `${name}.ts`), ...args], {
      stdio: "inherit",
      env: { ...process.env, BENCH_NO_BUILD: "1", BENCH_RUN_ALL: "1", ...(QUICK ? { BENCH_QUICK: "1" } : {}) }
    })
  )
  const limit = setTimeout(() => child.kill("SIGTERM"), 2 * 60 * 60_000)
  const r = await new Promise<{ status: number | null; signal: string | null }>((resolve) =>
    child.once("exit", (status, signal) => resolve({ status, signal }))
  )
  clearTimeout(limit)
  const status = r.status === 0 ? "ok" : `FAILED (${r.status ?? r.signal})`
  statuses.push(`${fragments.join(", ")}: ${status} in ${Math.round((Date.now() - started) / 1000)} s`)
}

const parts = BENCHMARKS.flatMap(([, fragments]) => fragments)
  .filter((f, i, all) => all.indexOf(f) === i)
  .map((f) => Path.join(RESULTS, `${f}.md`))
  .filter((p) => existsSync(p))
  .map((p) => readFileSync(p, "utf8").trim())
const summary = Path.join(RESULTS, "summary.md")
writeFileSync(
  summary,
  `# Benchmark results${QUICK ? " (quick mode: smoke-test sizes, not measurements)" : ""}\n\nMachine: ${machineLine(m)}\n\n${beforeLine}${parts.join("\n\n---\n\n")}\n`
)
formatFiles([summary])
out(
  `\n${statuses.join("\n")}\ntotal ${Math.round((Date.now() - t0) / 1000)} s; summary: ${Path.relative(BENCH, summary)}`
)
finish(statuses.every((s) => s.includes(": ok")) ? 0 : 1)
