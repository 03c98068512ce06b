/**
 * What every benchmark shares: parameters (CLI flags or env vars, with a quick
 * mode), statistics, tables, result files, the machine's description, /proc
 * readings, HTTP probes, and the cleanup that kills every process a benchmark
 * started (and only those: each carries a tag in its environment).
 *
 * Benchmarks are not tests: nothing here asserts a time.
 */
import { type ChildProcess, spawnSync } from "node:child_process"
import { randomUUID } from "node:crypto"
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import * as http from "node:http"
import * as net from "node:net"
import * as os from "node:os"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"

export const ROOT = Path.resolve(Path.dirname(fileURLToPath(import.meta.url)), "../..")
export const BENCH = Path.join(ROOT, "bench")
export const SCRATCH = Path.join(BENCH, ".scratch")
export const PEERS = Path.join(SCRATCH, "peers")
export const OURS_DIST = Path.join(SCRATCH, "dist")
/** Full-size results go to bench/results; quick (smoke) runs to bench/.scratch/results-quick, never mixed up. */
export const RESULTS_FULL = Path.join(BENCH, "results")
export const FIXTURES = Path.join(BENCH, "fixtures")
export const HOST = "127.0.0.1"

// ---------------------------------------------------------------------------
// Output (the project's lint forbids console: write to the streams directly)

export const out = (text: string): void => void process.stdout.write(text.endsWith("\n") ? text : `${text}\n`)
export const note = (text: string): void => void process.stderr.write(`  · ${text}\n`)

// ---------------------------------------------------------------------------
// Parameters: --name=value, else BENCH_NAME, else the quick or full default

const argv = process.argv.slice(2)

const flag = (name: string): string | undefined => {
  const prefix = `--${name}=`
  for (const a of argv) {
    if (a === `--${name}`) return "1"
    if (a.startsWith(prefix)) return a.slice(prefix.length)
  }
  const env = process.env[`BENCH_${name.toUpperCase().replaceAll("-", "_")}`]
  return env === undefined || env === "" ? undefined : env
}

/** Quick mode: tiny sizes, to check that a benchmark works (`--quick` or `BENCH_QUICK=1`). */
export const QUICK = ((v) => v !== undefined && v !== "0" && v !== "false")(flag("quick"))

export const RESULTS = QUICK ? Path.join(SCRATCH, "results-quick") : RESULTS_FULL

export const num = (name: string, full: number, quick: number): number => {
  const raw = flag(name)
  if (raw === undefined) return QUICK ? quick : full
  const n = Number(raw)
  if (!Number.isFinite(n)) throw new Error(`--${name} must be a number, got ${raw}`)
  return n
}

export const list = (name: string, full: ReadonlyArray<string>, quick: ReadonlyArray<string> = full): Array<string> => {
  const raw = flag(name)
  if (raw === undefined) return [...(QUICK ? quick : full)]
  return raw
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
}

export const numList = (name: string, full: ReadonlyArray<number>, quick: ReadonlyArray<number>): Array<number> =>
  list(name, full.map(String), quick.map(String)).map(Number)

export const str = (name: string, full: string, quick: string = full): string => flag(name) ?? (QUICK ? quick : full)

/** Variables the runs set for the benchmarks they start (BENCH_BEFORE_REF stays: it reproduces the paths). */
const INTERNAL_ENV = [
  "BENCH_TAGS",
  "BENCH_RUN_ALL",
  "BENCH_NO_BUILD",
  "BENCH_BEFORE_DIST",
  "BENCH_BEFORE_BIN",
  "BENCH_BEFORE_BUNDLED",
  "BENCH_BEFORE_SRC"
]

/** The command line that reproduces this run, for the result files. */
export const commandLine = (): string => {
  const script = Path.relative(ROOT, process.argv[1] ?? "")
  const envs = Object.entries(process.env)
    .filter(([k]) => k.startsWith("BENCH_") && !INTERNAL_ENV.includes(k))
    .map(([k, v]) => `${k}=${v}`)
  return [...envs, "node", script, ...argv].join(" ")
}

// ---------------------------------------------------------------------------
// Time and statistics

/** Epoch milliseconds with sub-millisecond resolution, comparable across processes of this machine. */
export const now = (): number => performance.timeOrigin + performance.now()

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

export interface Stats {
  readonly n: number
  readonly median: number
  readonly p95: number
  readonly p99: number
  readonly min: number
  readonly max: number
  readonly mean: number
}

/** Nearest-rank percentile of sorted values. */
const rank = (sorted: ReadonlyArray<number>, p: number): number =>
  sorted.length === 0 ? Number.NaN : sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))]!

export const stats = (values: ReadonlyArray<number>): Stats => {
  const sorted = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b)
  const n = sorted.length
  const median = n === 0 ? Number.NaN : n % 2 === 1 ? sorted[(n - 1) / 2]! : (sorted[n / 2 - 1]! + sorted[n / 2]!) / 2
  return {
    n,
    median,
    p95: rank(sorted, 0.95),
    p99: rank(sorted, 0.99),
    min: n === 0 ? Number.NaN : sorted[0]!,
    max: n === 0 ? Number.NaN : sorted[n - 1]!,
    mean: n === 0 ? Number.NaN : sorted.reduce((a, b) => a + b, 0) / n
  }
}

export const percentile = (values: ReadonlyArray<number>, p: number): number =>
  rank(
    [...values].filter((v) => Number.isFinite(v)).sort((a, b) => a - b),
    p
  )

export const fmt = (v: number, digits = 1): string =>
  Number.isFinite(v) ? v.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits }) : "–"

export const ratio = (ours: number, peer: number): string =>
  Number.isFinite(ours) && Number.isFinite(peer) && peer !== 0 ? `${(ours / peer).toFixed(2)}x` : "–"

/** Rotates the order of the systems each round, so none always goes first. */
export const rotate = <A>(items: ReadonlyArray<A>, round: number): Array<A> => {
  const k = items.length === 0 ? 0 : round % items.length
  return [...items.slice(k), ...items.slice(0, k)]
}

// ---------------------------------------------------------------------------
// Tables and result files

export interface Table {
  readonly title: string
  readonly headers: ReadonlyArray<string>
  readonly rows: ReadonlyArray<ReadonlyArray<string>>
  readonly notes?: ReadonlyArray<string> | undefined
}

export const markdownTable = (t: Table): string => {
  const line = (cells: ReadonlyArray<string>) => `| ${cells.join(" | ")} |`
  const sep = t.headers.map((_, i) => (i === 0 ? "---" : "---:"))
  return [line(t.headers), line(sep), ...t.rows.map(line)].join("\n")
}

export const printTable = (t: Table): void => {
  const widths = t.headers.map((h, i) => Math.max(h.length, ...t.rows.map((r) => (r[i] ?? "").length)))
  const line = (cells: ReadonlyArray<string>) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ")
  out("")
  out(t.title)
  out(line(t.headers))
  out(widths.map((w) => "-".repeat(w)).join("  "))
  for (const r of t.rows) out(line(r))
  for (const n of t.notes ?? []) out(`  ${n}`)
}

export interface Machine {
  readonly cores: number
  readonly cpu: string
  readonly memoryGiB: number
  readonly node: string
  readonly os: string
  readonly loadAverage: ReadonlyArray<number>
  readonly peers: Readonly<Record<string, string>>
}

export const machine = (): Machine => ({
  cores: os.availableParallelism(),
  cpu: os.cpus()[0]?.model ?? "unknown",
  memoryGiB: Math.round(os.totalmem() / 2 ** 30),
  node: process.version,
  os: `${os.type()} ${os.release()}`,
  loadAverage: os.loadavg().map((l) => Math.round(l * 100) / 100),
  peers: peerVersions()
})

export const machineLine = (m: Machine): string =>
  `${m.cores} cores (${m.cpu}), ${m.memoryGiB} GiB, Node ${m.node}, ${m.os}; load average at start ${m.loadAverage.join(" / ")}` +
  (Object.keys(m.peers).length > 0
    ? `; peers: ${Object.entries(m.peers)
        .map(([k, v]) => `${k} ${v}`)
        .join(", ")}`
    : "")

/**
 * Writes `bench/results/<name>.json` (everything) and `<name>.md` (the
 * tables, the command and the machine: a fragment for docs/benchmarks.md).
 */
export const writeResults = (
  name: string,
  started: Machine,
  tables: ReadonlyArray<Table>,
  data: unknown,
  extra: ReadonlyArray<string> = []
): void => {
  // `--result=NAME` writes NAME.md and NAME.json instead: a variant of a benchmark kept beside its default run.
  name = str("result", name)
  mkdirSync(RESULTS, { recursive: true })
  const command = commandLine()
  const md = [
    `<!-- ${name}: written by ${command} on ${new Date().toISOString()} -->`,
    "",
    `Command: \`${command}\`${QUICK ? " (quick mode: smoke-test sizes, not a measurement)" : ""}`,
    "",
    `Machine: ${machineLine(started)}`,
    "",
    ...tables.flatMap((t) => [`**${t.title}**`, "", markdownTable(t), "", ...(t.notes ?? []).map((n) => `- ${n}`), ""]),
    ...extra
  ].join("\n")
  const mdPath = Path.join(RESULTS, `${name}.md`)
  const jsonPath = Path.join(RESULTS, `${name}.json`)
  writeFileSync(mdPath, `${md.trimEnd()}\n`)
  writeFileSync(
    jsonPath,
    `${JSON.stringify({ name, command, quick: QUICK, at: new Date().toISOString(), machine: started, tables, data }, null, 2)}\n`
  )
  formatFiles([mdPath, jsonPath])
  out(`\n  results: ${Path.relative(ROOT, mdPath)} and .json`)
}

/** Formats files with the project's formatter (so committed results pass `oxfmt --check`); best effort. */
export const formatFiles = (files: ReadonlyArray<string>): void => {
  const oxfmt = Path.join(ROOT, "node_modules", ".bin", "oxfmt")
  if (!existsSync(oxfmt) || files.length === 0) return
  spawnSync(oxfmt, [...files], { cwd: ROOT, stdio: "ignore", timeout: 60_000 })
}

// ---------------------------------------------------------------------------
// /proc readings (Linux)

const CLK_TCK = 100

export interface ProcSample {
  readonly rssKiB: number
  readonly fds: number
  readonly cpuMs: number
  readonly threads: number
}

export const procSample = (pid: number): ProcSample | undefined => {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "latin1")
    const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+)`, "m").exec(status)?.[1] ?? Number.NaN)
    const stat = readFileSync(`/proc/${pid}/stat`, "latin1")
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    // fields after the command: state(0) ppid(1) … utime(11) stime(12)
    const cpuMs = ((Number(rest[11]) + Number(rest[12])) * 1000) / CLK_TCK
    return { rssKiB: field("VmRSS"), fds: readdirSync(`/proc/${pid}/fd`).length, cpuMs, threads: field("Threads") }
  } catch {
    return undefined
  }
}

export const mib = (kib: number): number => kib / 1024

/** Live children (not zombies) of a process. */
export const childrenOf = (ppid: number): Array<number> => {
  const found: Array<number> = []
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "latin1")
      const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
      if (Number(rest[1]) === ppid && rest[0] !== "Z" && rest[0] !== "X") found.push(Number(entry))
    } catch {
      // gone meanwhile
    }
  }
  return found
}

// ---------------------------------------------------------------------------
// Cleanup: every process a benchmark starts carries BENCH_TAGS=<…,uuid> in its
// environment (the tags of this benchmark and of the runs that started it);
// on exit, whatever still carries this one's tag is killed. Nothing else is.

export const TAG = randomUUID()
process.env.BENCH_TAGS = [process.env.BENCH_TAGS, TAG].filter((t) => t !== undefined && t !== "").join(",")

const carriesTag = (environ: string): boolean =>
  environ.split("\0").some((entry) => entry.startsWith("BENCH_TAGS=") && entry.slice(11).split(",").includes(TAG))

export const taggedPids = (): Array<number> => {
  const found: Array<number> = []
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue
    const pid = Number(entry)
    if (pid === process.pid) continue
    try {
      if (!carriesTag(readFileSync(`/proc/${pid}/environ`, "latin1"))) continue
      const stat = readFileSync(`/proc/${pid}/stat`, "latin1")
      const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3)
      if (state !== "Z" && state !== "X") found.push(pid)
    } catch {
      // gone meanwhile, or not readable
    }
  }
  return found
}

const children = new Set<ChildProcess>()
const syncCleanups: Array<() => void> = []

/** Tracks a child (started with `detached: true`, so it leads a process group) for cleanup. */
export const track = (child: ChildProcess): ChildProcess => {
  children.add(child)
  child.once("exit", () => children.delete(child))
  return child
}

/** Runs at exit, synchronously (e.g. `pm2 kill`). */
export const onCleanup = (f: () => void): void => void syncCleanups.push(f)

const killQuietly = (pid: number, signal: NodeJS.Signals) => {
  try {
    process.kill(pid, signal)
  } catch {
    // already gone
  }
}

let cleanedUp = false
export const cleanup = (): void => {
  if (cleanedUp) return
  cleanedUp = true
  for (const f of syncCleanups.splice(0)) {
    try {
      f()
    } catch (error) {
      note(`cleanup step failed: ${String(error)}`)
    }
  }
  for (const child of children) {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      killQuietly(-child.pid, "SIGKILL")
      killQuietly(child.pid, "SIGKILL")
    }
  }
  for (const pid of taggedPids()) killQuietly(pid, "SIGKILL")
}

process.on("exit", cleanup)
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(signal, () => {
    note(`${signal}: cleaning up`)
    cleanup()
    process.exit(130)
  })
}
process.on("uncaughtException", (error) => {
  process.stderr.write(`uncaught: ${error.stack ?? String(error)}\n`)
  cleanup()
  process.exit(1)
})
process.on("unhandledRejection", (error) => {
  process.stderr.write(
    `unhandled rejection: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`
  )
  cleanup()
  process.exit(1)
})

/** Ends the benchmark after `seconds` whatever happens (bounded in time). */
export const watchdog = (seconds: number): void => {
  setTimeout(() => {
    process.stderr.write(`benchmark watchdog: still running after ${seconds} s, giving up\n`)
    cleanup()
    process.exit(2)
  }, seconds * 1000).unref()
}

/** Polls `check` every `every` ms until it returns a value, at most `timeoutMs`. */
export const waitFor = async <A>(
  what: string,
  check: () => A | undefined | Promise<A | undefined>,
  timeoutMs: number,
  every = 10
): Promise<A> => {
  const deadline = now() + timeoutMs
  for (let i = 0; i < 1_000_000; i++) {
    const v = await check()
    if (v !== undefined) return v
    if (now() > deadline) break
    await sleep(every)
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
}

export const requireNode = (): void => {
  const major = Number(process.versions.node.split(".")[0])
  if (major < 22) {
    throw new Error(`benchmarks need Node >= 22 (this is ${process.version}); run them with npm run bench`)
  }
}

// ---------------------------------------------------------------------------
// Ports and HTTP

export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once("error", reject)
    server.listen(0, HOST, () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })

export interface Answer {
  readonly status: number
  readonly body: string
  readonly at: number
}

/** One GET on a new connection (no keep-alive), so the primary hands it to a worker. */
export const get = (port: number, path = "/", timeoutMs = 2000): Promise<Answer> =>
  new Promise((resolve, reject) => {
    const req = http.request(
      { host: HOST, port, path, method: "GET", agent: false, headers: { connection: "close" }, timeout: timeoutMs },
      (res) => {
        let body = ""
        res.setEncoding("utf8")
        res.on("data", (chunk: string) => {
          body += chunk
        })
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body, at: now() }))
        res.on("error", reject)
      }
    )
    req.on("timeout", () => req.destroy(new Error("timeout")))
    req.on("error", reject)
    req.end()
  })

/** The pid a hello-world worker put in its answer ("hello <pid>"). */
export const pidOf = (a: Answer): number | undefined => {
  const m = /hello (\d+)/.exec(a.body)
  return m ? Number(m[1]) : undefined
}

/**
 * Probes the port with overlapping requests (a new one every `every` ms, at
 * most `inFlight` at once, so one stuck connection cannot delay the answer)
 * until `done(pid, at)` returns true for an answer. Returns the time of that
 * answer.
 */
export const probeUntil = (
  port: number,
  done: (pid: number, at: number) => boolean,
  options: { readonly timeoutMs: number; readonly every?: number; readonly inFlight?: number }
): Promise<number> =>
  new Promise((resolve, reject) => {
    const every = options.every ?? 2
    const maxInFlight = options.inFlight ?? 4
    const deadline = now() + options.timeoutMs
    let inFlight = 0
    let finished = false
    const finish = (error: Error | undefined, at: number) => {
      if (finished) return
      finished = true
      clearInterval(timer)
      if (error) reject(error)
      else resolve(at)
    }
    const fire = () => {
      if (finished) return
      if (now() > deadline) return finish(new Error(`no answer within ${options.timeoutMs} ms`), 0)
      if (inFlight >= maxInFlight) return
      inFlight++
      get(port, "/", 1000).then(
        (a) => {
          inFlight--
          const pid = pidOf(a)
          if (a.status === 200 && pid !== undefined && done(pid, a.at)) finish(undefined, a.at)
        },
        () => {
          inFlight--
        }
      )
    }
    const timer = setInterval(fire, every)
    fire()
  })

// ---------------------------------------------------------------------------
// Peers (installed on demand into bench/.scratch/peers) and our own build

const PEER_PACKAGES = ["pm2", "throng", "autocannon"] as const
export type Peer = (typeof PEER_PACKAGES)[number]

export const peerDir = (name: Peer): string => Path.join(PEERS, "node_modules", name)

function peerVersions(): Record<string, string> {
  const versions: Record<string, string> = {}
  for (const name of PEER_PACKAGES) {
    try {
      versions[name] = JSON.parse(readFileSync(Path.join(peerDir(name), "package.json"), "utf8")).version
    } catch {
      // not installed
    }
  }
  return versions
}

/**
 * Installs the peers (latest PM2, throng and autocannon) into
 * bench/.scratch/peers with npm, unless they are there already. They are
 * not dependencies of the package. `--reinstall-peers` updates them.
 */
export const ensurePeers = (): void => {
  const missing = PEER_PACKAGES.filter((p) => !existsSync(Path.join(peerDir(p), "package.json")))
  const reinstall = flag("reinstall-peers") !== undefined
  if (missing.length === 0 && !reinstall) return
  mkdirSync(PEERS, { recursive: true })
  if (!existsSync(Path.join(PEERS, "package.json"))) {
    writeFileSync(Path.join(PEERS, "package.json"), `${JSON.stringify({ name: "bench-peers", private: true })}\n`)
  }
  note(`installing ${PEER_PACKAGES.map((p) => `${p}@latest`).join(" ")} into ${Path.relative(ROOT, PEERS)}`)
  const r = spawnSync(
    "npm",
    [
      "install",
      "--prefix",
      PEERS,
      "--no-audit",
      "--no-fund",
      "--loglevel=error",
      ...PEER_PACKAGES.map((p) => `${p}@latest`)
    ],
    { stdio: ["ignore", "inherit", "inherit"], timeout: 300_000 }
  )
  if (r.status !== 0) throw new Error(`npm install of the peers failed (status ${r.status}, ${String(r.error ?? "")})`)
}

/**
 * Compiles src/ to JavaScript in bench/.scratch/dist: "ours" runs as users
 * get the package (compiled JS), not through Node's type stripping (which
 * alone adds ~17 MB of RSS to a process). Type errors do not stop the emit.
 */
export const buildOurs = async (): Promise<void> => {
  if (
    flag("no-build") !== undefined &&
    existsSync(Path.join(OURS_DIST, "index.js")) &&
    existsSync(OURS_BUNDLED_PRIMARY)
  )
    return
  const r = compileLibrary(ROOT, OURS_DIST)
  if (r.status !== 0) note(`tsc reported type errors in src/ (the emit is used anyway):\n${r.output}`)
  await bundleOursPrimary()
}

/**
 * Compiles the package whose root is `root` (its tsconfig.build.json) to
 * JavaScript in `outDir`, with no declarations nor source maps: what
 * `buildOurs` runs, for this tree or another (bench/lib/before.ts). Type
 * errors do not stop the emit; a missing emit throws.
 */
export const compileLibrary = (
  root: string,
  outDir: string
): { readonly status: number | null; readonly output: string } => {
  const tsc = Path.join(ROOT, "node_modules", ".bin", "tsc")
  const r = spawnSync(
    tsc,
    [
      "-p",
      "tsconfig.build.json",
      "--outDir",
      outDir,
      "--declaration",
      "false",
      "--declarationMap",
      "false",
      "--sourceMap",
      "false"
    ],
    { cwd: root, encoding: "utf8", timeout: 180_000 }
  )
  if (!existsSync(Path.join(outDir, "index.js")) || !existsSync(Path.join(outDir, "node.js"))) {
    throw new Error(`building ${Path.join(root, "src")} into ${outDir} failed: ${r.stdout}${r.stderr}`)
  }
  return { status: r.status, output: r.stdout.trim() }
}

/**
 * Lays out the package as npm installs it, in `into` (a
 * `node_modules/effect-prefork` directory): the package.json and bin/ of
 * `root`, the compiled library `dist` as dist/, and the command's bundle
 * (root's dist/bin) in dist/bin, so that bin/prefork.js runs as installed.
 */
export const installPackage = (root: string, dist: string, into: string): void => {
  rmSync(into, { recursive: true, force: true })
  mkdirSync(into, { recursive: true })
  cpSync(Path.join(root, "package.json"), Path.join(into, "package.json"))
  cpSync(Path.join(root, "bin"), Path.join(into, "bin"), { recursive: true })
  cpSync(dist, Path.join(into, "dist"), { recursive: true })
  cpSync(Path.join(root, "dist", "bin"), Path.join(into, "dist", "bin"), { recursive: true })
}

/** Bundles this tree's `prefork` command into dist/bin/prefork.js (scripts/build-cli.mjs), as `npm run build:cli` does. */
export const buildCommand = (): void => {
  const built = spawnSync(process.execPath, [Path.join(ROOT, "scripts", "build-cli.mjs")], {
    encoding: "utf8",
    timeout: 300_000
  })
  if (built.status !== 0) throw new Error(`scripts/build-cli.mjs failed: ${built.stderr}`)
}

/** The bundled primary of the "ours-bundled" system (see bench/fixtures/ours-bundled-primary.mjs). */
export const OURS_BUNDLED_PRIMARY = Path.join(SCRATCH, "bundles", "ours-bundled-primary.mjs")

/**
 * Bundles bench/fixtures/ours-bundled-primary.mjs with rolldown into one
 * file (`output`), `effect-prefork` and `effect-prefork/node` resolved to the
 * compiled package (`dist`: bench/.scratch/dist, or another build), Effect
 * inside: what a user who bundles their primary runs. Minified as such a user
 * would, not mangled.
 */
export const bundleOursPrimary = async (dist = OURS_DIST, output = OURS_BUNDLED_PRIMARY): Promise<void> => {
  const { rolldown } = await import("rolldown")
  const entries: Record<string, string> = {
    "effect-prefork": Path.join(dist, "index.js"),
    "effect-prefork/node": Path.join(dist, "node.js")
  }
  const bundle = await rolldown({
    input: Path.join(FIXTURES, "ours-bundled-primary.mjs"),
    platform: "node",
    logLevel: "warn",
    plugins: [{ name: "effect-prefork", resolveId: (id: string) => entries[id] ?? null }]
  })
  await bundle.write({
    file: output,
    format: "esm",
    codeSplitting: false,
    minify: { compress: true, mangle: false, codegen: { removeWhitespace: true } }
  })
  await bundle.close()
}

export const scratchDir = (name: string): string => {
  const dir = Path.join(SCRATCH, name)
  mkdirSync(dir, { recursive: true })
  return dir
}

/** Ends the benchmark: cleanup runs on exit (PM2's client would otherwise keep the process alive). */
export const finish = (code = 0): never => {
  cleanup()
  process.exit(code)
}

/**
 * Probes until `count` distinct worker pids have answered; resolves with the
 * time the last of them answered.
 */
export const awaitDistinctPids = (
  port: number,
  count: number,
  options: { readonly timeoutMs?: number; readonly every?: number } = {}
): Promise<number> => {
  const seen = new Set<number>()
  return probeUntil(
    port,
    (pid) => {
      seen.add(pid)
      return seen.size >= count
    },
    {
      timeoutMs: options.timeoutMs ?? 30_000,
      inFlight: Math.max(4, count),
      ...(options.every === undefined ? {} : { every: options.every })
    }
  )
}

/**
 * The crash stamp a worker wrote in `dir` before it exited (`GET /crash` in the
 * HTTP fixtures: epoch milliseconds, sub-ms, in a file named by its pid).
 */
export const readStamp = (dir: string, pid: number): Promise<number> =>
  waitFor(
    `the crash stamp of pid ${pid}`,
    () => {
      try {
        const t = Number(readFileSync(Path.join(dir, String(pid)), "utf8"))
        return Number.isFinite(t) && t > 0 ? t : undefined
      } catch {
        return undefined
      }
    },
    5000,
    5
  )

/**
 * Stops a supervising process started in its own group (`detached`): SIGTERM,
 * then bounded waiting (10 s); whatever is left of its group is killed.
 */
export const stopGroup = async (child: ChildProcess): Promise<void> => {
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve()
    else child.once("exit", () => resolve())
  })
  child.kill("SIGTERM")
  const inTime = await Promise.race([exited.then(() => true), sleep(10_000).then(() => false)])
  if (!inTime) note(`pid ${child.pid} did not stop within 10 s: killing its group`)
  try {
    process.kill(-child.pid!, "SIGKILL")
  } catch {
    // gone
  }
  await Promise.race([exited, sleep(2000)])
}

/**
 * The systems of a benchmark of the command (`--systems`, else `defaults`
 * with `prefork-before` after `prefork` when a before build is there), each
 * one of `all`; `prefork-before` only with a before build (`--before=REF`).
 */
export const commandSystems = <S extends string>(all: ReadonlyArray<S>, defaults: ReadonlyArray<S>): Array<S> => {
  const before = process.env.BENCH_BEFORE_BIN !== undefined
  const withBefore = defaults.flatMap((s) => (s === "prefork" && before ? [s, "prefork-before"] : [s]))
  return list("systems", withBefore).map((s) => {
    if (!(all as ReadonlyArray<string>).includes(s)) throw new Error(`unknown system ${s}: use ${all.join(", ")}`)
    if (s === "prefork-before" && !before)
      throw new Error(
        "system prefork-before runs the package at another commit: give --before=REF (e.g. --before=4fdb599)"
      )
    return s as S
  })
}

/**
 * This tree's command built (the bundle) and installed as npm installs it, in
 * bench/.scratch/installed/node_modules/effect-prefork: its path. Effect and
 * @effect/platform-node resolve from the repository's node_modules, as from an app's.
 */
export const installedPrefork = (): string => {
  buildCommand()
  const pkg = Path.join(scratchDir("installed"), "node_modules", "effect-prefork")
  installPackage(ROOT, OURS_DIST, pkg)
  return pkg
}
