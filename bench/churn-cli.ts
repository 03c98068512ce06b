/**
 * The `prefork` command's own CPU per restart: `prefork -n 2 -- /bin/false`
 * restarting as fast as it can (`--backoff 0 --max-restarts 1000000`, every
 * other flag at its default: pretty logs to stderr at level info), against a
 * raw Node spawn loop (the loop of bench/fixtures/raw-spawn.cjs, which also
 * counts its exits). Several builds of the command can run side by side
 * (`--bundles=after=dist/bin/prefork.js,old=/tmp/old/dist/bin/prefork.js`).
 * With `--before=REF` (which `npm run bench -- --before=REF` passes on), the
 * default bundles are `prefork` and `before`: the bundle of the package built
 * at commit REF (bench/lib/before.ts), run the same way as `prefork`'s.
 *
 * Each run: start, let it crash-loop for 1 s, then read the supervising
 * process's CPU time (/proc/<pid>/stat) and its restart count, again after
 * `--seconds`, and report CPU per restart (user and system), restarts per
 * second and RSS. Two more floors: `raw-setpriv` spawns what prefork spawns on
 * Linux (`setpriv --pdeathsig KILL -- /bin/false`, detached), `raw-heap` holds
 * `--raw-heap-mib` (100) more MiB, as a larger primary does.
 * prefork's restarts are its `…, restarting` log lines; the raw loop tells its
 * count on SIGUSR1.
 *
 *   node bench/churn-cli.ts [--bundles=prefork=dist/bin/prefork.js] [--seconds=10] [--rounds=3] [--workers=2]
 *                           [--profile=<name>] [--primary-node-args=--max-semi-space-size=1] [--before=REF] [--quick]
 */
import { spawn, type ChildProcess } from "node:child_process"
import { existsSync, readFileSync } from "node:fs"
import * as Path from "node:path"
import {
  buildCommand,
  finish,
  fmt,
  list,
  machine,
  note,
  num,
  printTable,
  procSample,
  requireNode,
  ROOT,
  rotate,
  scratchDir,
  sleep,
  stats,
  type Table,
  track,
  watchdog,
  writeResults
} from "./lib/common.ts"
import { beforeFromFlag } from "./lib/before.ts"

requireNode()
await beforeFromFlag()
const seconds = num("seconds", 10, 2)
const rounds = num("rounds", 3, 1)
const workers = num("workers", 2, 2)
const profiled = list("profile", [])
/** Node flags for every supervising process (`--primary-node-args=--max-semi-space-size=1`), as in bench/churn.ts. */
const nodeArgs = list("primary-node-args", [])
/** `raw-heap`: the raw loop holding about this much more memory (small objects), as a supervisor's heap would. */
const heapMiB = num("raw-heap-mib", 100, 100)
/** The "before" build's bundle (its bin/prefork.js runs ../dist/bin/prefork.js), when `--before` built one. */
const beforeBundle = process.env.BENCH_BEFORE_BIN
  ? [`before=${Path.resolve(Path.dirname(process.env.BENCH_BEFORE_BIN), "..", "dist", "bin", "prefork.js")}`]
  : []
const bundles = list("bundles", ["prefork=dist/bin/prefork.js", ...beforeBundle]).map((entry) => {
  const i = entry.indexOf("=")
  if (i <= 0) throw new Error(`--bundles: expected name=path, got ${entry}`)
  return { name: entry.slice(0, i), path: Path.resolve(ROOT, entry.slice(i + 1)) }
})
watchdog(num("timeout", 1800, 300))
const started = machine()
// This tree's bundle, as it is now (bench/cli.ts does the same).
if (bundles.some((b) => b.path === Path.join(ROOT, "dist", "bin", "prefork.js"))) buildCommand()

/** The raw floor: raw-spawn.cjs's loop, counting exits, telling the count on SIGUSR1. */
const RAW = `
const { spawn } = require("node:child_process")
const [n, command, ...args] = process.argv.slice(1)
let exits = 0, stopping = false
process.on("SIGUSR1", () => process.stderr.write("count " + exits + "\\n"))
const held = []
for (let i = 0; i < Number(process.env.RAW_HEAP_MIB ?? 0) * 6000; i++) held.push({ i, s: String(i) })
process.stderr.write("ready\\n")
const live = new Set()
const start = (taskId) => {
  const child = spawn(command, args, { stdio: "inherit", detached: process.env.RAW_DETACHED === "1", env: { ...process.env, PREFORK_TASK_ID: String(taskId) } })
  live.add(child)
  child.on("exit", (code, signal) => {
    live.delete(child)
    exits++
    if (stopping) { if (live.size === 0) process.exit(0); return }
    if (code !== 0 || signal !== null) setImmediate(() => stopping || start(taskId))
  })
}
process.on("SIGTERM", () => { stopping = true; if (live.size === 0) process.exit(0); for (const c of live) c.kill("SIGTERM") })
for (let i = 0; i < Number(n); i++) start(i)
`

/** What prefork spawns on Linux: each worker in a session of its own, through `setpriv --pdeathsig KILL`. */
const SETPRIV = ["/usr/bin/setpriv", "--pdeathsig", "KILL", "--"]
const withSetpriv = process.platform === "linux" && existsSync(SETPRIV[0]!)

interface Run {
  readonly child: ChildProcess
  /** The restarts so far. */
  readonly count: () => Promise<number>
  /** Once it is under way (the raw loop holds its memory first). */
  readonly ready: Promise<void>
}

const startRun = (system: string): Run => {
  const bundle = bundles.find((b) => b.name === system)
  const prof = [
    ...nodeArgs,
    ...(profiled.includes(system) ? ["--cpu-prof", `--cpu-prof-dir=${scratchDir("prof")}`] : [])
  ]
  const argv =
    bundle === undefined
      ? [...prof, "-e", RAW, String(workers), ...(system === "raw-setpriv" ? SETPRIV : []), "/bin/false"]
      : [...prof, bundle.path, "--backoff", "0", "--max-restarts", "1000000", "-n", String(workers), "--", "/bin/false"]
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    RAW_DETACHED: system === "raw-setpriv" ? "1" : "0",
    RAW_HEAP_MIB: system === "raw-heap" ? String(heapMiB) : "0"
  }
  delete env.NODE_OPTIONS
  const child = track(spawn(process.execPath, argv, { stdio: ["ignore", "ignore", "pipe"], detached: true, env }))
  let restarts = 0
  let rawCount: ((n: number) => void) | undefined
  let isReady: () => void = () => {}
  const ready = new Promise<void>((resolve, reject) => {
    if (bundle !== undefined) return resolve()
    const timer = setTimeout(() => reject(new Error(`${system} was not under way within 60 s`)), 60_000)
    isReady = () => {
      clearTimeout(timer)
      resolve()
    }
  })
  let tail = ""
  child.stderr!.setEncoding("utf8")
  child.stderr!.on("data", (chunk: string) => {
    const lines = (tail + chunk).split("\n")
    tail = lines.pop() ?? ""
    for (const line of lines) {
      if (line.endsWith(", restarting")) restarts++
      else if (line.startsWith("count ")) rawCount?.(Number(line.slice(6)))
      else if (line === "ready") isReady()
    }
  })
  const count = (): Promise<number> => {
    if (bundle !== undefined) return Promise.resolve(restarts)
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("the raw loop did not tell its count within 5 s")), 5000)
      rawCount = (n) => {
        clearTimeout(timer)
        rawCount = undefined
        resolve(n)
      }
      child.kill("SIGUSR1")
    })
  }
  return { child, count, ready }
}

const stop = async (child: ChildProcess): Promise<void> => {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
  child.kill("SIGTERM")
  const timer = setTimeout(() => {
    try {
      process.kill(-child.pid!, "SIGKILL")
    } catch {
      // gone
    }
  }, 10_000)
  await exited
  clearTimeout(timer)
}

type Sample = {
  system: string
  round: number
  restarts: number
  cpuMs: number
  userMs: number
  sysMs: number
  seconds: number
  rssKiB: number
}

/** User and system CPU time of a process so far, in ms (/proc/<pid>/stat, every thread). */
const cpuOf = (pid: number): { user: number; sys: number } => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "latin1")
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    return { user: Number(rest[11]) * 10, sys: Number(rest[12]) * 10 }
  } catch {
    return { user: Number.NaN, sys: Number.NaN }
  }
}
const samples: Array<Sample> = []
const systems = [...bundles.map((b) => b.name), "raw", ...(withSetpriv ? ["raw-setpriv"] : []), "raw-heap"]

for (let round = 0; round < rounds; round++) {
  for (const system of rotate(systems, round)) {
    const run = startRun(system)
    try {
      await run.ready
      await sleep(1000)
      const pid = run.child.pid!
      const c0 = await run.count()
      const cpu0 = cpuOf(pid)
      const t0 = performance.now()
      await sleep(seconds * 1000)
      const c1 = await run.count()
      const cpu1 = cpuOf(pid)
      const t1 = performance.now()
      const rssKiB = procSample(pid)?.rssKiB ?? Number.NaN
      const userMs = cpu1.user - cpu0.user
      const sysMs = cpu1.sys - cpu0.sys
      const sample = {
        system,
        round,
        restarts: c1 - c0,
        cpuMs: userMs + sysMs,
        userMs,
        sysMs,
        seconds: (t1 - t0) / 1000,
        rssKiB
      }
      samples.push(sample)
      note(
        `round ${round + 1}/${rounds} ${system}: ${sample.restarts} restarts in ${fmt(sample.seconds)} s, ` +
          `${fmt(sample.cpuMs / sample.restarts, 2)} ms CPU per restart, RSS ${fmt(rssKiB / 1024)} MiB`
      )
      if (sample.restarts === 0) throw new Error(`${system}: no restart counted (is it a prefork bundle?)`)
    } finally {
      await stop(run.child)
    }
  }
}

const med = (xs: ReadonlyArray<number>) => stats(xs).median
const perRestart = (s: string) => med(samples.filter((x) => x.system === s).map((x) => x.cpuMs / x.restarts))
const per = (s: string, f: (x: Sample) => number) =>
  med(samples.filter((x) => x.system === s).map((x) => f(x) / x.restarts))
const rate = (s: string) => med(samples.filter((x) => x.system === s).map((x) => x.restarts / x.seconds))
const table: Table = {
  title: `\`prefork -n ${workers} -- /bin/false\` restarting as fast as it can: the supervising process's CPU per restart`,
  headers: [
    "system",
    "CPU ms/restart",
    "vs raw",
    "user",
    "system",
    "restarts/s",
    "vs raw",
    "RSS MiB at the end",
    "runs"
  ],
  rows: systems.map((s) => [
    s,
    fmt(perRestart(s), 2),
    s.startsWith("raw") ? "" : `${(perRestart(s) / perRestart("raw")).toFixed(2)}x`,
    fmt(
      per(s, (x) => x.userMs),
      2
    ),
    fmt(
      per(s, (x) => x.sysMs),
      2
    ),
    fmt(rate(s)),
    s.startsWith("raw") ? "" : `${(rate(s) / rate("raw")).toFixed(2)}x`,
    fmt(med(samples.filter((x) => x.system === s).map((x) => x.rssKiB / 1024))),
    String(samples.filter((x) => x.system === s).length)
  ]),
  notes: [
    `prefork: \`--backoff 0 --max-restarts 1000000 -n ${workers} -- /bin/false\`, every other flag at its default (pretty logs to stderr, a pipe here).`,
    `raw: a Node spawn loop (bench/fixtures/raw-spawn.cjs's) respawning on the next turn of the event loop; raw-setpriv: the same loop spawning what prefork spawns on Linux (\`setpriv --pdeathsig KILL -- /bin/false\`, detached); raw-heap: the raw loop holding ~${heapMiB} MiB more of small objects (a fork costs in proportion to the parent's memory).`,
    "user, system: the CPU time per restart in user mode and in the kernel (a fork, its page tables, the other system calls).",
    `${seconds} s per run after 1 s of warm-up; ${rounds} round(s), systems alternating; medians.`,
    ...bundles.map((b) => `${b.name}: ${Path.relative(ROOT, b.path) || b.path}`),
    ...(nodeArgs.length > 0 ? [`Node flags of every supervising process: ${nodeArgs.join(" ")}`] : [])
  ]
}
printTable(table)
writeResults("churn-cli", started, [table], { seconds, rounds, workers, bundles, samples })
finish()
