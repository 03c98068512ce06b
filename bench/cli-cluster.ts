/**
 * The `prefork` command in cluster mode as a new user starts it, against the
 * primaries a user would write or install instead: spawn of the supervising
 * process → all N cluster workers answering HTTP on one shared port (cold:
 * the command's own start included), systems alternating round by round.
 *
 * - `prefork`: `prefork --cluster -n N -- node http-worker.cjs`, the package
 *   installed as npm installs it (bench/.scratch/installed, as bench/cli.ts
 *   builds it), run through its bin/prefork.js;
 * - `prefork-before`: the same with the package at `--before=REF`
 *   (bench/lib/before.ts), when given;
 * - `raw`: a hand-written `node:cluster` primary (bench/fixtures/raw-primary.cjs);
 * - `throng`: throng 5 (bench/fixtures/throng-primary.cjs);
 * - `pm2`: PM2 cluster mode, from connecting to its daemon (which starts it),
 *   as bench/startup.ts measures it.
 *
 * Every system serves bench/fixtures/http-worker.cjs on $BENCH_PORT.
 *
 *   node bench/cli-cluster.ts [--rounds=7] [--workers=2,4] [--systems=prefork,raw,throng,pm2] [--before=REF] [--quick]
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as Path from "node:path"
import {
  awaitDistinctPids,
  buildOurs,
  commandSystems,
  ensurePeers,
  finish,
  installedPrefork,
  fmt,
  freePort,
  list,
  machine,
  note,
  now,
  num,
  numList,
  printTable,
  ratio,
  requireNode,
  rotate,
  stopGroup,
  stats,
  type Table,
  track,
  watchdog,
  writeResults
} from "./lib/common.ts"
import { beforeFromFlag } from "./lib/before.ts"
import { HTTP_WORKER, startSystem } from "./lib/systems.ts"

requireNode()
await beforeFromFlag()
const BEFORE_BIN = process.env.BENCH_BEFORE_BIN
const rounds = num("rounds", 7, 1)
const sizes = numList("workers", [2, 4], [2])
const ALL = ["prefork", "prefork-before", "raw", "throng", "pm2"] as const
type System = (typeof ALL)[number]
const systems = commandSystems<System>(ALL, ["prefork", "raw", "throng", "pm2"])
watchdog(num("timeout", 1200, 300))

const started = machine()
await buildOurs()
// The package as npm installs it: node_modules/effect-prefork/{package.json, bin, dist}, the bundle built now.
const PKG = installedPrefork()
if (systems.includes("throng") || systems.includes("pm2")) ensurePeers()

const bin = (system: "prefork" | "prefork-before"): string =>
  system === "prefork" ? Path.join(PKG, "bin", "prefork.js") : BEFORE_BIN!

/** The command, started as a shell would: its own process group, stopped by SIGTERM, whatever is left killed. */
const startCommand = (system: "prefork" | "prefork-before", workers: number, port: number) => {
  const env: NodeJS.ProcessEnv = { ...process.env, BENCH_PORT: String(port) }
  delete env["NODE_OPTIONS"]
  const t0 = now()
  const child: ChildProcess = track(
    spawn(process.execPath, [bin(system), "--cluster", "-n", String(workers), "--", process.execPath, HTTP_WORKER], {
      env,
      stdio: ["ignore", "ignore", "ignore"],
      detached: true
    })
  )
  return { t0, stop: () => stopGroup(child) }
}

type Sample = { system: System; workers: number; round: number; ms: number }
const samples: Array<Sample> = []
for (let round = 0; round < rounds; round++) {
  for (const workers of sizes) {
    for (const system of rotate(systems, round)) {
      const port = await freePort()
      const running =
        system === "prefork" || system === "prefork-before"
          ? startCommand(system, workers, port)
          : await startSystem(system, { workers, port, workerScript: HTTP_WORKER })
      try {
        const at = await awaitDistinctPids(port, workers, { timeoutMs: 30_000, every: 2 })
        samples.push({ system, workers, round, ms: at - running.t0 })
        note(`round ${round + 1}/${rounds} N=${workers} ${system}: ${fmt(at - running.t0)} ms`)
      } finally {
        await running.stop()
      }
    }
  }
}

const of = (system: System, workers: number) =>
  stats(samples.filter((s) => s.system === system && s.workers === workers).map((s) => s.ms))
const table: Table = {
  title: "`prefork --cluster -n N`: spawn of the supervising process → all N cluster workers answering HTTP",
  headers: ["system", "median ms", "p95 ms", "samples", "vs raw", "prefork/peer"],
  rows: sizes.flatMap((workers) =>
    systems.map((s) => {
      const st = of(s, workers)
      return [
        `N=${workers} ${s}`,
        fmt(st.median),
        fmt(st.p95),
        String(st.n),
        s === "raw" ? "" : ratio(st.median, of("raw", workers).median),
        s === "prefork" ? "" : ratio(of("prefork", workers).median, st.median)
      ]
    })
  ),
  notes: [
    `${rounds} rounds, systems alternating; cold: from just before the supervising process is spawned (PM2: from connecting, which starts its daemon) to N distinct pids answering new-connection GETs.`,
    ...(BEFORE_BIN === undefined
      ? []
      : [
          `prefork-before: the package at ${process.env.BENCH_BEFORE_REF ?? "--before"}, installed and run as prefork is.`
        ])
  ]
}
printTable(table)
writeResults("cli-cluster", started, [table], { rounds, sizes, systems, samples })
finish()
