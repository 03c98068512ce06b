/**
 * The `prefork` command as a new user meets it, against a hand-written spawn
 * loop (bench/fixtures/raw-spawn.cjs, the floor), variants alternating round
 * by round:
 *
 * - `prefork`: installed as npm installs it (bench/.scratch/installed:
 *   node_modules/effect-prefork with bin/ and dist/), so bin/prefork.js runs
 *   the bundle dist/bin/prefork.js (scripts/build-cli.mjs);
 * - `prefork-dist`: the same package's `dist/cli/main.js`, the separate
 *   modules compiled by tsc: what an install ran before the bundle;
 * - `prefork-ts`: `src/cli/main.ts` through Node's type stripping: what a
 *   checkout ran before the bundle;
 * - `raw`: `node raw-spawn.cjs <n> <command…>`;
 * - `floor-effect`: bench/fixtures/floor-effect.ts, Effect's runtime started
 *   (`Effect.runFork(Effect.void)`) and then the raw spawn loop; `floor-cli`:
 *   bench/fixtures/floor-cli.ts, the same flags parsed by the same `effect/cli`
 *   definitions and then the raw spawn loop. Both bundled now exactly as the
 *   command is (scripts/build-cli.mjs `bundleProgram`) and run with Node's
 *   compile cache (NODE_COMPILE_CACHE, a directory of this run), as
 *   bin/prefork.js runs the command: what `prefork` takes beyond them is its own;
 * - `prefork-base`: the package copied by an earlier run with
 *   `--save-base` (bench/.scratch/base/): the command before a change, run
 *   side by side with the one after it;
 * - `prefork-nocache`: `prefork` with NODE_DISABLE_COMPILE_CACHE=1;
 * - `prefork-before`: the package built at commit REF by `--before=REF`
 *   (bench/lib/before.ts; `npm run bench -- --before=REF` passes it on),
 *   installed the same way, its bin/prefork.js run ($BENCH_BEFORE_BIN); in
 *   the default systems, right after `prefork`, when it is built.
 *
 * Figures: `--version` from spawn to exit (`node -e 0` as the floor); spawn →
 * all N workers answering HTTP (each worker on its own port), N = 1, 4; and
 * the supervising process's RSS (and PSS) idle with 4 `sleep` workers.
 *
 *   node bench/cli.ts [--rounds=7] [--workers=1,4] [--idle-ms=3000] [--systems=prefork,floor-cli,floor-effect,raw] [--before=REF] [--quick]
 *   node bench/cli.ts --save-base     # also copies the package as built now to bench/.scratch/base (for prefork-base)
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync } from "node:fs"
import * as Path from "node:path"
// @ts-expect-error: plain JavaScript, with no types
import { bundleProgram } from "../scripts/build-cli.mjs"
import {
  awaitDistinctPids,
  buildOurs,
  childrenOf,
  commandSystems,
  finish,
  installedPrefork,
  FIXTURES,
  fmt,
  freePort,
  list,
  machine,
  mib,
  note,
  now,
  num,
  numList,
  printTable,
  procSample,
  ratio,
  requireNode,
  ROOT,
  rotate,
  scratchDir,
  stopGroup,
  sleep,
  stats,
  str,
  type Table,
  track,
  waitFor,
  watchdog,
  writeResults
} from "./lib/common.ts"
import { beforeFromFlag } from "./lib/before.ts"

requireNode()
await beforeFromFlag()
const rounds = num("rounds", 7, 1)
const sizes = numList("workers", [1, 4], [1])
const idleMs = num("idle-ms", 3000, 500)
const ALL = [
  "prefork",
  "prefork-before",
  "prefork-base",
  "prefork-nocache",
  "prefork-dist",
  "prefork-ts",
  "floor-cli",
  "floor-effect",
  "raw"
] as const
type System = (typeof ALL)[number]
const BEFORE_BIN = process.env.BENCH_BEFORE_BIN || undefined
const systems = commandSystems<System>(ALL, ["prefork", "floor-cli", "floor-effect", "raw"])
watchdog(num("timeout", 1200, 300))

const started = machine()
await buildOurs()

// The package as npm installs it: node_modules/effect-prefork/{package.json, bin, dist}, the bundle built now.
const PKG = installedPrefork()
const BASE = Path.join(scratchDir("base"), "node_modules", "effect-prefork")
if (str("save-base", "") !== "") {
  rmSync(BASE, { recursive: true, force: true })
  cpSync(PKG, BASE, { recursive: true })
  note(`the package as built now is saved as prefork-base (${BASE})`)
}

// The floors, bundled as the command is.
const FLOORS = scratchDir("floors")
for (const floor of ["floor-effect", "floor-cli"]) {
  await bundleProgram({ input: Path.join(FIXTURES, `${floor}.ts`), output: Path.join(FLOORS, `${floor}.js`) })
}
const COMPILE_CACHE = scratchDir("compile-cache")

const entry: Record<System, ReadonlyArray<string>> = {
  prefork: [Path.join(PKG, "bin", "prefork.js")],
  "prefork-before": [BEFORE_BIN ?? ""],
  "prefork-base": [Path.join(BASE, "bin", "prefork.js")],
  "prefork-nocache": [Path.join(PKG, "bin", "prefork.js")],
  "prefork-dist": [Path.join(PKG, "dist", "cli", "main.js")],
  "prefork-ts": [Path.join(ROOT, "src", "cli", "main.ts")],
  "floor-cli": [Path.join(FLOORS, "floor-cli.js")],
  "floor-effect": [Path.join(FLOORS, "floor-effect.js")],
  raw: [Path.join(FIXTURES, "raw-spawn.cjs")]
}
for (const s of systems) if (!existsSync(entry[s][0]!)) throw new Error(`${s}: ${entry[s][0]} is missing`)

/** What a system's process gets in its environment beyond the benchmark's. */
const systemEnv = (system: string): Record<string, string> =>
  system === "prefork-nocache"
    ? { NODE_DISABLE_COMPILE_CACHE: "1" }
    : system.startsWith("floor-")
      ? { NODE_COMPILE_CACHE: COMPILE_CACHE }
      : {}

/** The command line of `system` supervising `n` copies of `command`. */
const argv = (system: System, n: number, command: ReadonlyArray<string>): Array<string> =>
  system === "raw" ? [...entry.raw, String(n), ...command] : [...entry[system], "-n", String(n), "--", ...command]

const env = (extra: Record<string, string> = {}): NodeJS.ProcessEnv => {
  const e: NodeJS.ProcessEnv = { ...process.env, ...extra }
  delete e["NODE_OPTIONS"]
  return e
}

const startSupervisor = (args: ReadonlyArray<string>, extra: Record<string, string> = {}): ChildProcess =>
  track(spawn(process.execPath, args, { env: env(extra), stdio: ["ignore", "ignore", "ignore"], detached: true }))

// ---------------------------------------------------------------------------
// 1. --version, spawn to exit

type VersionSample = { system: string; round: number; ms: number }
const versions: Array<VersionSample> = []
const versionSystems = [...systems.filter((s) => s !== "raw"), "node -e 0"]
for (let round = 0; round < rounds; round++) {
  for (const system of rotate(versionSystems, round)) {
    const args = system === "node -e 0" ? ["-e", "0"] : [...entry[system as System], "--version"]
    const t0 = now()
    const r = spawnSync(process.execPath, args, { env: env(systemEnv(system)), encoding: "utf8", timeout: 30_000 })
    const ms = now() - t0
    if (r.status !== 0) throw new Error(`${system} --version failed: ${r.stderr}`)
    versions.push({ system, round, ms })
  }
}
note(`--version: ${rounds} rounds done`)

// ---------------------------------------------------------------------------
// 2. spawn → all N workers answering

type StartSample = { system: System; workers: number; round: number; ms: number }
const starts: Array<StartSample> = []
const worker = [process.execPath, Path.join(FIXTURES, "http-worker.cjs")]
for (let round = 0; round < rounds; round++) {
  for (const workers of sizes) {
    for (const system of rotate(systems, round)) {
      const ports: Array<number> = []
      for (let i = 0; i < workers; i++) ports.push(await freePort())
      const t0 = now()
      const child = startSupervisor(argv(system, workers, worker), {
        ...systemEnv(system),
        BENCH_PORTS: ports.join(",")
      })
      try {
        let last = 0
        for (const port of ports)
          last = Math.max(last, await awaitDistinctPids(port, 1, { timeoutMs: 30_000, every: 2 }))
        starts.push({ system, workers, round, ms: last - t0 })
        note(`round ${round + 1}/${rounds} N=${workers} ${system}: ${fmt(last - t0)} ms`)
      } finally {
        await stopGroup(child)
      }
    }
  }
}

// ---------------------------------------------------------------------------
// 3. idle RSS with 4 `sleep` workers

const pss = (pid: number): number => {
  try {
    return Number(/^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "latin1"))?.[1] ?? Number.NaN)
  } catch {
    return Number.NaN
  }
}
// The reference of the target: a raw node:cluster primary (bench/fixtures/raw-primary.cjs)
// with 4 cluster workers, which must be Node programs (hello-world HTTP workers here).
type IdleSystem = System | "raw-cluster"
const idleSystems: ReadonlyArray<IdleSystem> = [...systems, "raw-cluster"]
const startIdle = async (system: IdleSystem): Promise<ChildProcess> =>
  system === "raw-cluster"
    ? startSupervisor([Path.join(FIXTURES, "raw-primary.cjs")], {
        BENCH_WORKERS: "4",
        BENCH_WORKER_SCRIPT: Path.join(FIXTURES, "http-worker.cjs"),
        BENCH_PORT: String(await freePort())
      })
    : startSupervisor(argv(system, 4, ["sleep", "3600"]), systemEnv(system))
type IdleSample = { system: IdleSystem; round: number; rssMiB: number; pssMiB: number }
const idles: Array<IdleSample> = []
const idleRounds = Math.max(1, Math.ceil(rounds / 2))
for (let round = 0; round < idleRounds; round++) {
  for (const system of rotate(idleSystems, round)) {
    const child = await startIdle(system)
    // Node names its main thread, so a node child's comm is "MainThread": count the sleeps, or every child.
    const worker = system === "raw-cluster" ? undefined : "sleep"
    try {
      await waitFor(
        `${system}: 4 workers`,
        () =>
          childrenOf(child.pid!).filter((pid) => {
            try {
              return worker === undefined || readFileSync(`/proc/${pid}/comm`, "latin1").trim() === worker
            } catch {
              return false
            }
          }).length >= 4 || undefined,
        30_000,
        20
      )
      await sleep(idleMs)
      const readings: Array<{ rss: number; pss: number }> = []
      for (let i = 0; i < 5; i++) {
        const s = procSample(child.pid!)
        if (s) readings.push({ rss: s.rssKiB, pss: pss(child.pid!) })
        await sleep(200)
      }
      const sample = {
        system,
        round,
        rssMiB: mib(stats(readings.map((r) => r.rss)).median),
        pssMiB: mib(stats(readings.map((r) => r.pss)).median)
      }
      idles.push(sample)
      note(
        `idle round ${round + 1}/${idleRounds} ${system}: RSS ${fmt(sample.rssMiB)} MiB, PSS ${fmt(sample.pssMiB)} MiB`
      )
    } finally {
      await stopGroup(child)
    }
  }
}

// ---------------------------------------------------------------------------

const versionFloor = stats(versions.filter((v) => v.system === "node -e 0").map((v) => v.ms)).median
const versionTable: Table = {
  title: "`prefork --version`: spawn → exit",
  headers: ["system", "median ms", "p95 ms", "vs node -e 0", "runs"],
  rows: versionSystems.map((s) => {
    const st = stats(versions.filter((v) => v.system === s).map((v) => v.ms))
    return [s, fmt(st.median), fmt(st.p95), s === "node -e 0" ? "" : ratio(st.median, versionFloor), String(st.n)]
  }),
  notes: [
    `${rounds} rounds, systems alternating.`,
    ...(systems.includes("prefork-before")
      ? [
          `prefork-before: the package at ${process.env.BENCH_BEFORE_REF ?? "?"} (--before), installed and run as prefork is (its bin/prefork.js).`
        ]
      : [])
  ]
}
/** `ratio (+difference ms)` of two medians, or nothing when `of` is `to` or `to` was not run. */
const against = (of: System, to: System, median: (s: System) => number): string =>
  of === to || !systems.includes(to) ? "" : `${ratio(median(of), median(to))} (${fmtDelta(median(of) - median(to))})`
const fmtDelta = (ms: number): string => `${ms >= 0 ? "+" : ""}${fmt(ms)}`
const startTable: Table = {
  title: "`prefork -n N -- node http-worker.cjs`: spawn of the supervisor → all N workers answering HTTP",
  headers: ["system", "median ms", "p95 ms", "vs raw (ms)", "vs floor-cli (ms)", "vs floor-effect (ms)", "samples"],
  rows: sizes.flatMap((workers) => {
    const of = (s: System) => stats(starts.filter((x) => x.system === s && x.workers === workers).map((x) => x.ms))
    const median = (s: System) => of(s).median
    return systems.map((s) => {
      const st = of(s)
      return [
        `N=${workers} ${s}`,
        fmt(st.median),
        fmt(st.p95),
        against(s, "raw", median),
        against(s, "floor-cli", median),
        against(s, "floor-effect", median),
        String(st.n)
      ]
    })
  }),
  notes: [
    `${rounds} rounds, systems alternating; each worker listens on its own port (spawned workers cannot share one), probed with new-connection GETs every 2 ms.`
  ]
}
const idleTable: Table = {
  title: "Supervising process idle with 4 `sleep 3600` workers (raw-cluster: 4 idle HTTP cluster workers)",
  headers: ["system", "RSS MiB", "vs raw (MiB)", "vs raw-cluster (MiB)", "PSS MiB", "rounds"],
  rows: idleSystems.map((s) => {
    const xs = idles.filter((x) => x.system === s)
    const rss = stats(xs.map((x) => x.rssMiB)).median
    const ref = (r: IdleSystem) => stats(idles.filter((x) => x.system === r).map((x) => x.rssMiB)).median
    const delta = (r: IdleSystem) => (s === r ? "" : `${rss - ref(r) >= 0 ? "+" : ""}${fmt(rss - ref(r))}`)
    return [
      s,
      fmt(rss),
      delta("raw"),
      delta("raw-cluster"),
      fmt(stats(xs.map((x) => x.pssMiB)).median),
      String(xs.length)
    ]
  }),
  notes: [
    `VmRSS after ${idleMs} ms idle, median of 5 readings 200 ms apart; ${idleRounds} rounds, systems alternating.`,
    "PSS (/proc/<pid>/smaps_rollup) counts a page shared by k processes as 1/k: the Node binary's pages are shared with every other node process."
  ]
}
for (const t of [versionTable, startTable, idleTable]) printTable(t)
writeResults("cli", started, [versionTable, startTable, idleTable], { rounds, sizes, idleMs, versions, starts, idles })
finish()
