/**
 * What loading the library costs a process: the time `await import(x)` takes
 * and the process's RSS right after, for our entry points and for Effect's
 * modules as references, each in a fresh `node` process, the targets
 * alternating round by round (the order rotated). Medians over rounds.
 *
 * `ours` is the package compiled to JavaScript (bench/.scratch/dist, as users
 * get it); `--dists=before=<dir>,…` adds the same rows for other builds (e.g.
 * an older commit compiled with `tsc`), so a change is measured side by side.
 * "bundled" rows import one file that rolldown made of the entry point (what a
 * user who bundles their primary loads).
 *
 *   node bench/import-cost.ts [--rounds=9] [--dists=label=dir,...] [--quick]
 */
import { spawnSync } from "node:child_process"
import { existsSync } from "node:fs"
import * as Path from "node:path"
import { rolldown } from "rolldown"
import {
  buildOurs,
  finish,
  fmt,
  list,
  machine,
  note,
  num,
  now,
  OURS_DIST,
  printTable,
  ratio,
  requireNode,
  ROOT,
  rotate,
  scratchDir,
  stats,
  type Table,
  watchdog,
  writeResults
} from "./lib/common.ts"

requireNode()
const rounds = num("rounds", 9, 2)
watchdog(num("timeout", 900, 120))

const started = machine()
await buildOurs()

const dists: Array<readonly [string, string]> = [
  ["ours", OURS_DIST],
  ...list("dists", []).map((entry) => {
    const [label, dir] = entry.split("=")
    if (label === undefined || dir === undefined || !existsSync(Path.join(dir, "node.js"))) {
      throw new Error(`--dists: expected label=dir with dir/node.js, got ${entry}`)
    }
    return [label, Path.resolve(dir)] as const
  })
]

/** One file made of `entry` (all its exports kept), in bench/.scratch/bundles. */
const bundleOf = async (label: string, entry: string): Promise<string> => {
  const file = Path.join(scratchDir("bundles"), `${label}-${Path.basename(entry)}`)
  const bundle = await rolldown({ input: entry, platform: "node", logLevel: "silent" })
  await bundle.write({ file, format: "esm", minify: true, codeSplitting: false })
  await bundle.close()
  return file
}

interface Target {
  readonly name: string
  readonly spec: string
}
const targets: Array<Target> = [
  { name: "nothing (node:path)", spec: "node:path" },
  { name: "node:http", spec: "node:http" },
  { name: "effect/Effect", spec: "effect/Effect" },
  { name: "effect (the barrel)", spec: "effect" },
  { name: "effect/Data", spec: "effect/Data" },
  { name: "effect/Schema", spec: "effect/Schema" }
]
for (const [label, dir] of dists) {
  targets.push(
    { name: `${label}: effect-prefork/node`, spec: Path.join(dir, "node.js") },
    { name: `${label}: effect-prefork`, spec: Path.join(dir, "index.js") },
    { name: `${label}: Errors`, spec: Path.join(dir, "Errors.js") },
    { name: `${label}: Worker`, spec: Path.join(dir, "Worker.js") },
    { name: `${label}: node/Prefork`, spec: Path.join(dir, "node", "Prefork.js") },
    { name: `${label}: effect-prefork/node, bundled`, spec: await bundleOf(label, Path.join(dir, "node.js")) }
  )
}

// Runs in the measured process: the import alone is timed; RSS is read right after it.
const probe = (spec: string) => `
const { readFileSync } = await import("node:fs")
const t0 = performance.now()
await import(${JSON.stringify(spec.startsWith("/") ? `file://${spec}` : spec)})
const ms = performance.now() - t0
const kib = Number(/VmRSS:\\s+(\\d+)/.exec(readFileSync("/proc/self/status", "utf8"))[1])
process.stdout.write(JSON.stringify({ ms, kib }))
`

type Sample = { target: string; round: number; ms: number; rssMiB: number; wallMs: number }
const samples: Array<Sample> = []
for (let round = 0; round < rounds; round++) {
  for (const target of rotate(targets, round)) {
    const t0 = now()
    const r = spawnSync(process.execPath, ["--input-type=module", "-e", probe(target.spec)], {
      cwd: ROOT,
      encoding: "utf8",
      timeout: 30_000,
      env: { ...process.env, NODE_OPTIONS: "" }
    })
    const wallMs = now() - t0
    if (r.status !== 0) throw new Error(`importing ${target.spec} failed: ${r.stderr}`)
    const { ms, kib } = JSON.parse(r.stdout) as { ms: number; kib: number }
    samples.push({ target: target.name, round, ms, rssMiB: kib / 1024, wallMs })
  }
  note(`round ${round + 1}/${rounds} done`)
}

const of = (name: string) => samples.filter((s) => s.target === name)
const effectMs = stats(of("effect/Effect").map((s) => s.ms)).median
const table: Table = {
  title: "Import cost: `await import(x)` in a fresh process, and its RSS right after",
  headers: ["import", "median ms", "p95 ms", "vs effect/Effect", "RSS MiB", "process wall ms", "runs"],
  rows: targets.map((t) => {
    const ms = stats(of(t.name).map((s) => s.ms))
    return [
      t.name,
      fmt(ms.median),
      fmt(ms.p95),
      ratio(ms.median, effectMs),
      fmt(stats(of(t.name).map((s) => s.rssMiB)).median),
      fmt(stats(of(t.name).map((s) => s.wallMs)).median, 0),
      String(ms.n)
    ]
  }),
  notes: [
    `${rounds} rounds, targets alternating; each run a fresh \`node --input-type=module -e\` process (${process.version}).`,
    "ms: the import alone (performance.now() around it); RSS: VmRSS right after; wall: spawn to exit of the whole process.",
    ...dists.map(([label, dir]) => `${label}: ${Path.relative(ROOT, dir) || dir}`)
  ]
}
printTable(table)
writeResults("import-cost", started, [table], { rounds, dists, samples })
finish()
