/**
 * Lossless reloads (issue 19): failed requests and p99 latency while the
 * workers change under load, for unmodified apps — node:http, express and
 * fastify, each calling `listen(PORT)` itself, with no SIGTERM handler and no
 * fd numbers (bench/fixtures/drain/) — under:
 *
 * - `prefork-listen`: `prefork --listen 127.0.0.1:PORT -n 4 -- node app.cjs`;
 * - `prefork-cluster`: `prefork --cluster -n 4 -- node app.cjs`;
 * - `pm2`: `pm2 start app.cjs -i 4`, then `pm2 reload`, `pm2 scale <app> 2`,
 *   `pm2 stop` (the PM2 command, its home in bench/.scratch/pm2-home, `pm2 kill`
 *   after every run);
 * - `raw`: a `node:cluster` primary written the idiomatic way
 *   (bench/fixtures/drain/raw-cluster.cjs): a rolling restart forks a new
 *   worker, waits for `listening`, then `disconnect()`s the old one; a
 *   scale-down or a stop `disconnect()`s workers.
 *
 * Each run: a fresh supervisor with 4 workers, all answering; autocannon with
 * `--connections` keep-alive connections, one request in flight on each
 * (bench/fixtures/drain/cannon.cjs); `--warmup-s` of steady load; the event
 * (a reload, a scale-down 4 → 2, or a stop); load kept until the new workers
 * serve (reload: a fresh connection is answered by a new pid), the workers
 * are 2 (scale-down), or the port refuses (stop); then `--tail-s` more, and the
 * load stops. Every wait is bounded.
 *
 * Failed requests are what autocannon counts: errors (timeouts included),
 * non-2xx answers and resets. For a stop, a request refused because nothing
 * listens any more (ECONNREFUSED) is counted apart: the client knows it was
 * not served and can go elsewhere. Every other failure after the stop is sent
 * (a reset, a connection closed with its request unanswered, a timeout, a 5xx)
 * is a request that was accepted and then lost.
 *
 * Before each run the benchmark waits (bounded) while /tmp/prefork-heavy.lock
 * is held, so it neither slows others' tests nor measures them.
 *
 *   node bench/drain.ts [--rounds=3] [--apps=http,express,fastify] [--systems=prefork-listen,prefork-cluster,pm2,raw]
 *                       [--events=reload,scale,stop] [--connections=50] [--warmup-s=3] [--tail-s=1] [--quick]
 */
import { type ChildProcess, fork, spawn, spawnSync } from "node:child_process"
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import * as Net from "node:net"
import { tmpdir } from "node:os"
import * as Path from "node:path"
import {
  awaitDistinctPids,
  commandLine,
  ensurePeers,
  finish,
  FIXTURES,
  fmt,
  freePort,
  HOST,
  list,
  machine,
  machineLine,
  note,
  now,
  num,
  out,
  PEERS,
  peerDir,
  percentile,
  printTable,
  probeUntil,
  requireNode,
  ROOT,
  rotate,
  scratchDir,
  sleep,
  str,
  type Table,
  taggedPids,
  track,
  watchdog,
  writeResults
} from "./lib/common.ts"
import { pm2Kill } from "./lib/systems.ts"

requireNode()
const SYSTEMS = ["prefork-listen", "prefork-cluster", "pm2", "raw"] as const
const APPS = ["http", "express", "fastify"] as const
const EVENTS = ["reload", "scale", "stop"] as const
type SystemName = (typeof SYSTEMS)[number]
type AppName = (typeof APPS)[number]
type EventName = (typeof EVENTS)[number]

const oneOf = <A extends string>(name: string, all: ReadonlyArray<A>, values: ReadonlyArray<string>): Array<A> =>
  values.map((v) => {
    if (!(all as ReadonlyArray<string>).includes(v)) throw new Error(`--${name}: unknown ${v}: use ${all.join(", ")}`)
    return v as A
  })

const rounds = num("rounds", 3, 1)
const connections = num("connections", 50, 50)
const warmupS = num("warmup-s", 3, 1)
const tailS = num("tail-s", 1, 0.5)
const lockWaitS = num("lock-wait-s", 120, 30)
const apps = oneOf("apps", APPS, list("apps", APPS))
const systems = oneOf("systems", SYSTEMS, list("systems", SYSTEMS))
const events = oneOf("events", EVENTS, list("events", EVENTS))
const WORKERS = 4
const SCALED = 2
watchdog(num("timeout", 3 * 3600, 1800))

const DRAIN = Path.join(FIXTURES, "drain")
const BIN = Path.join(ROOT, "bin", "prefork.js")
const LOCK = "/tmp/prefork-heavy.lock"
const PM2_HOME = scratchDir("pm2-home")
const APP_PACKAGES = ["express", "fastify"] as const

// ---------------------------------------------------------------------------
// Set-up: peers (PM2, autocannon; express and fastify beside them), the command

/** Installs express and fastify (latest) into bench/.scratch/peers, as ensurePeers installs PM2. */
const ensureApps = (): void => {
  const missing = APP_PACKAGES.filter((p) => !existsSync(Path.join(PEERS, "node_modules", p, "package.json")))
  if (missing.length === 0 && str("reinstall-peers", "") === "") return
  note(`installing ${APP_PACKAGES.map((p) => `${p}@latest`).join(" ")} into ${Path.relative(ROOT, PEERS)}`)
  const r = spawnSync(
    "npm",
    [
      "install",
      "--prefix",
      PEERS,
      "--no-audit",
      "--no-fund",
      "--loglevel=error",
      ...APP_PACKAGES.map((p) => `${p}@latest`)
    ],
    { stdio: ["ignore", "inherit", "inherit"], timeout: 300_000 }
  )
  if (r.status !== 0) throw new Error(`npm install of express and fastify failed (status ${r.status})`)
}

const versionOf = (name: string): string =>
  JSON.parse(readFileSync(Path.join(PEERS, "node_modules", name, "package.json"), "utf8")).version

ensurePeers()
ensureApps()
const started = machine()
const appVersions = `apps: node:http (Node ${process.version}), express ${versionOf("express")}, fastify ${versionOf("fastify")}`

// The command as the CLI tests run it: bin/prefork.js runs the bundle dist/bin/prefork.js, built now from src/.
// Always (run-all's build is the library's, not the command's): a few seconds.
{
  const built = spawnSync(process.execPath, [Path.join(ROOT, "scripts", "build-cli.mjs")], {
    encoding: "utf8",
    timeout: 180_000
  })
  if (built.status !== 0) throw new Error(`scripts/build-cli.mjs failed: ${built.stderr}`)
}

/** The commit the command was built from, and whether src/ had uncommitted changes then. */
const code = ((): string => {
  const git = (...args: Array<string>) =>
    spawnSync("git", args, { cwd: ROOT, encoding: "utf8", timeout: 10_000 }).stdout?.trim() ?? ""
  const commit = git("rev-parse", "--short", "HEAD") || "unknown"
  return git("status", "--porcelain", "--", "src") === "" ? commit : `${commit} with uncommitted changes in src/`
})()

/** What every supervisor and its workers get: `node` is this Node, apps find express and fastify, PORT. */
const environment = (port: number, extra: Record<string, string> = {}): NodeJS.ProcessEnv => {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PATH: `${Path.dirname(process.execPath)}${Path.delimiter}${process.env.PATH ?? ""}`,
    NODE_PATH: Path.join(PEERS, "node_modules"),
    PORT: String(port),
    ...extra
  }
  // As a user starts it from a shell: not under npm, no inherited Node options.
  for (const key of Object.keys(env)) if (key.startsWith("npm_") || key === "NODE_OPTIONS") delete env[key]
  return env
}

let logSeq = 0
const logFile = (name: string): string => Path.join(scratchDir("logs"), `drain-${name}-${process.pid}-${++logSeq}.log`)

/** The first line of a log that says why workers did not serve (an error), else its last line. */
const whyInLog = (path: string): string => {
  const lines = readFileSync(path, "utf8")
    .split("\n")
    .filter((l) => l.trim() !== "")
  const error =
    lines.find((l) => /\bE[A-Z]{3,}\b/.test(l) && /Error/.test(l)) ??
    lines.find((l) => /Error|giving up|too many/i.test(l))
  return (error ?? lines.at(-1) ?? "no output")
    .replace(/^\[[^\]]*\]\s*/, "")
    .replace(/127\.0\.0\.1:\d+/g, "127.0.0.1:PORT")
    .slice(0, 160)
}

const exitOf = (child: ChildProcess): Promise<void> =>
  new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve()
    else child.once("exit", () => resolve())
  })

/** Runs a command to its end, bounded: its stdout, or an error with its stderr. */
const run = (command: ReadonlyArray<string>, env: NodeJS.ProcessEnv, timeoutMs = 60_000): Promise<string> =>
  new Promise((resolve, reject) => {
    const child = track(spawn(process.execPath, command, { env, stdio: ["ignore", "pipe", "pipe"], detached: true }))
    let stdout = ""
    let stderr = ""
    child.stdout!.on("data", (c: Buffer) => (stdout += c.toString()))
    child.stderr!.on("data", (c: Buffer) => (stderr += c.toString()))
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs)
    child.once("exit", (code, signal) => {
      clearTimeout(timer)
      if (code === 0) resolve(stdout)
      else
        reject(
          new Error(
            `${Path.basename(command[0]!)} ${command.slice(1, 3).join(" ")}: ${code ?? signal}: ${stderr.trim().slice(0, 300)}`
          )
        )
    })
  })

// ---------------------------------------------------------------------------
// The supervisors, each behind the same few operations

interface Supervised {
  /** The live workers' pids. */
  readonly pids: () => Promise<Array<number>>
  readonly reload: () => Promise<void>
  readonly scale: (n: number) => Promise<void>
  /** Sends the stop; resolves when the supervisor says it is done (bounded). */
  readonly stop: () => Promise<void>
  /** Ends whatever is left of it (bounded): after every run. */
  readonly end: () => Promise<void>
}

/** Waits until `count` distinct pids answer, or fails as soon as `exited` settles. */
const serving = async (port: number, exited: Promise<void>, why: () => string): Promise<void> => {
  const gone = exited.then(() => Promise.reject(new Error(`exited before serving: ${why()}`)))
  await Promise.race([awaitDistinctPids(port, WORKERS, { timeoutMs: 20_000 }), gone]).catch((error: Error) => {
    throw new Error(error.message.startsWith("exited") ? error.message : `not serving in 20 s: ${why()}`)
  })
}

const startPrefork = async (system: SystemName, app: string, port: number): Promise<Supervised> => {
  // A control socket of its own, named, in a 0700 directory made for it (prefork ctl talks to it).
  const runtimeDir = mkdtempSync(Path.join(tmpdir(), "prefork-drain-"))
  const control = Path.join(runtimeDir, "prefork.sock")
  const env = environment(port, { XDG_RUNTIME_DIR: runtimeDir })
  const mode = system === "prefork-listen" ? ["--listen", `${HOST}:${port}`] : ["--cluster"]
  const log = logFile(system)
  const fd = openSync(log, "a")
  const child = track(
    spawn(process.execPath, [BIN, ...mode, "--control", control, "-n", String(WORKERS), "--", "node", app], {
      env,
      stdio: ["ignore", fd, fd],
      detached: true
    })
  )
  closeSync(fd)
  const exited = exitOf(child)
  const ctl = (...args: Array<string>) => run([BIN, "ctl", "--control", control, ...args], env)
  const stop = async () => {
    child.kill("SIGTERM")
    if (!(await Promise.race([exited.then(() => true), sleep(30_000).then(() => false)]))) {
      note(`${system}: prefork did not exit within 30 s of SIGTERM`)
    }
  }
  const supervised: Supervised = {
    pids: async () =>
      (await ctl("status"))
        .trim()
        .split("\n")
        .slice(1)
        .map((line) => Number(line.trim().split(/\s+/)[1]))
        .filter((pid) => Number.isInteger(pid) && pid > 0),
    reload: () => ctl("reload").then(() => undefined),
    scale: (n) => ctl("scale", String(n)).then(() => undefined),
    stop,
    end: async () => {
      if (child.exitCode === null && child.signalCode === null) await stop()
      try {
        process.kill(child.pid!, "SIGKILL")
      } catch {
        // gone
      }
      rmSync(runtimeDir, { recursive: true, force: true })
    }
  }
  try {
    await serving(port, exited, () => whyInLog(log))
  } catch (error) {
    await supervised.end()
    throw error
  }
  return supervised
}

const startPm2 = async (app: string, port: number): Promise<Supervised> => {
  if (!existsSync(Path.join(PM2_HOME, "touch"))) writeFileSync(Path.join(PM2_HOME, "touch"), String(Date.now()))
  const env = environment(port, { PM2_HOME, PM2_DISABLE_VERSION_CHECK: "true" })
  const pm2 = (...args: Array<string>) => run([Path.join(peerDir("pm2"), "bin", "pm2"), ...args], env)
  const name = `drain-${Path.basename(app, ".cjs")}`
  const end = async () => {
    pm2Kill()
  }
  try {
    await pm2("start", app, "-i", String(WORKERS), "--name", name)
    // PM2 exits from its own daemon when the benchmark's cleanup runs `pm2 kill`; meanwhile it never "exits".
    await serving(port, new Promise(() => {}), () => "PM2's workers do not answer")
  } catch (error) {
    await end()
    throw error
  }
  return {
    pids: async () => {
      const text = await pm2("jlist")
      const all = JSON.parse(text.slice(text.indexOf("["))) as Array<{ name: string; pid: number }>
      return all.filter((p) => p.name === name && p.pid > 0).map((p) => p.pid)
    },
    reload: () => pm2("reload", name).then(() => undefined),
    scale: (n) => pm2("scale", name, String(n)).then(() => undefined),
    stop: () => pm2("stop", name).then(() => undefined),
    end
  }
}

const startRaw = async (app: string, port: number): Promise<Supervised> => {
  const log = logFile("raw")
  const fd = openSync(log, "a")
  const child = track(
    fork(Path.join(DRAIN, "raw-cluster.cjs"), [], {
      env: environment(port, { BENCH_APP: app, BENCH_WORKERS: String(WORKERS) }),
      stdio: ["ignore", fd, fd, "ipc"],
      detached: true
    })
  )
  closeSync(fd)
  const exited = exitOf(child)
  let nextId = 0
  const ask = (message: Record<string, unknown>) =>
    new Promise<{ pids: Array<number> }>((resolve, reject) => {
      const id = ++nextId
      const timer = setTimeout(() => reject(new Error(`raw primary: no answer to ${message.cmd} in 60 s`)), 60_000)
      const onMessage = (m: { id: number; error?: string; pids: Array<number> }) => {
        if (m.id !== id) return
        clearTimeout(timer)
        child.off("message", onMessage)
        if (m.error !== undefined) reject(new Error(m.error))
        else resolve(m)
      }
      child.on("message", onMessage)
      child.send({ ...message, id })
    })
  const stop = async () => {
    child.kill("SIGTERM")
    if (!(await Promise.race([exited.then(() => true), sleep(30_000).then(() => false)]))) {
      note("raw: the primary did not exit within 30 s of SIGTERM")
    }
  }
  const end = async () => {
    if (child.exitCode === null && child.signalCode === null) await stop()
    try {
      process.kill(-child.pid!, "SIGKILL")
    } catch {
      // gone
    }
  }
  try {
    await serving(port, exited, () => whyInLog(log))
  } catch (error) {
    await end()
    throw error
  }
  return {
    pids: async () => (await ask({ cmd: "pids" })).pids,
    reload: () => ask({ cmd: "reload" }).then(() => undefined),
    scale: (n) => ask({ cmd: "scale", n }).then(() => undefined),
    stop,
    end
  }
}

const start = (system: SystemName, app: AppName, port: number): Promise<Supervised> => {
  const script = Path.join(DRAIN, `${app}.cjs`)
  return system === "pm2"
    ? startPm2(script, port)
    : system === "raw"
      ? startRaw(script, port)
      : startPrefork(system, script, port)
}

// ---------------------------------------------------------------------------
// The load

interface Seen {
  readonly totals: {
    readonly requests: number
    readonly errors: number
    readonly timeouts: number
    readonly non2xx: number
    readonly resets: number
    readonly p99: number
  }
  readonly at: ReadonlyArray<number>
  readonly latency: ReadonlyArray<number>
  readonly status: ReadonlyArray<number>
  readonly failures: ReadonlyArray<{ readonly t: number; readonly code: string }>
}

/** autocannon in its own process (bench/fixtures/drain/cannon.cjs) until `stop()`, bounded. */
const startLoad = async (port: number, maxSeconds: number) => {
  const child = track(
    fork(Path.join(DRAIN, "cannon.cjs"), [`http://${HOST}:${port}/`, String(connections), String(maxSeconds)], {
      env: { ...environment(port), BENCH_AUTOCANNON: peerDir("autocannon") },
      stdio: ["ignore", "inherit", "inherit", "ipc"],
      detached: true
    })
  )
  const done = new Promise<Seen>((resolve, reject) => {
    child.on("message", (m: { type: string } & Seen) => {
      if (m.type === "done") resolve(m)
    })
    child.once("exit", (code) => reject(new Error(`the load generator exited ${code} without a report`)))
  })
  done.catch(() => {})
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("the load generator did not start in 30 s")), 30_000)
    child.on("message", (m: { type: string }) => {
      if (m.type === "started") {
        clearTimeout(timer)
        resolve()
      }
    })
  })
  return {
    stop: async (): Promise<Seen> => {
      if (child.connected) child.send({ type: "stop" })
      const timer = setTimeout(() => child.kill("SIGKILL"), 30_000)
      try {
        return await done
      } finally {
        clearTimeout(timer)
      }
    }
  }
}

/** When a fresh connection to the port is refused (nothing listens), bounded. */
const refusedAt = (port: number, timeoutMs: number): Promise<number | undefined> =>
  (async () => {
    const deadline = now() + timeoutMs
    for (let i = 0; i < 10_000 && now() < deadline; i++) {
      const refused = await new Promise<boolean>((resolve) => {
        const socket = Net.connect(port, HOST)
        socket.once("connect", () => {
          socket.destroy()
          resolve(false)
        })
        socket.once("error", (e: NodeJS.ErrnoException) => resolve(e.code === "ECONNREFUSED"))
      })
      if (refused) return now()
      await sleep(20)
    }
    return undefined
  })()

// ---------------------------------------------------------------------------
// The shared lock: never benchmark while others' tests hold it

const lockBusy = (): boolean => spawnSync("flock", ["-n", LOCK, "true"], { timeout: 10_000 }).status !== 0

/**
 * Waits while the shared test lock is held, polling every 2 s, at most
 * `--lock-wait-s`: how long it waited, and whether the lock was still held
 * when it gave up waiting (the run then shares the cores with others' tests).
 */
const waitForQuiet = async (): Promise<{ readonly waitedMs: number; readonly busy: boolean }> => {
  const t0 = now()
  for (let i = 0; i < 100_000; i++) {
    if (!lockBusy()) return { waitedMs: now() - t0, busy: false }
    if (now() - t0 > lockWaitS * 1000) break
    await sleep(2000)
  }
  note(`${LOCK} still held after ${lockWaitS} s (others' tests): running anyway`)
  return { waitedMs: now() - t0, busy: true }
}

// ---------------------------------------------------------------------------
// One run: a fresh supervisor, load, the event, load until the change is served

interface Outcome {
  readonly app: AppName
  readonly system: SystemName
  readonly event: EventName
  readonly round: number
  /** Why the run could not be made (the supervisor did not serve), if so. */
  readonly skipped?: string | undefined
  readonly requests: number
  /** errors + non-2xx + resets from the event on, refusals excluded */
  readonly lost: number
  readonly refused: number
  /** errors + non-2xx + resets over the whole run, as autocannon counts them */
  readonly failedTotal: number
  readonly failures: Record<string, number>
  readonly p99Before: number
  readonly p99During: number
  readonly eventMs: number
  readonly workersAfter: number
  readonly replaced: boolean
  readonly waitedForLockMs: number
  /** The shared test lock was still held when the run started (others' tests ran beside it). */
  readonly lockHeld: boolean
  readonly loadAverage: number
  readonly problems: ReadonlyArray<string>
}

const once = async (app: AppName, system: SystemName, event: EventName, round: number): Promise<Outcome> => {
  const quiet = await waitForQuiet()
  const loadAverage = Math.round(machine().loadAverage[0]! * 100) / 100
  const base = { app, system, event, round, waitedForLockMs: quiet.waitedMs, lockHeld: quiet.busy, loadAverage }
  const empty = {
    requests: 0,
    lost: Number.NaN,
    refused: Number.NaN,
    failedTotal: Number.NaN,
    failures: {},
    p99Before: Number.NaN,
    p99During: Number.NaN,
    eventMs: Number.NaN,
    workersAfter: 0,
    replaced: false
  }
  const port = await freePort()
  let supervised: Supervised
  try {
    supervised = await start(system, app, port)
  } catch (error) {
    return { ...base, ...empty, skipped: (error as Error).message, problems: [] }
  }
  const problems: Array<string> = []
  let seen: Seen | undefined
  let tEvent = Number.NaN
  let tDone = Number.NaN
  let workersAfter = 0
  let replaced = false
  try {
    const before = await supervised.pids()
    const load = await startLoad(port, warmupS + tailS + 120)
    try {
      await sleep(warmupS * 1000)
      tEvent = now()
      if (event === "reload") {
        await supervised.reload()
        tDone = now()
        // The new workers serve: a fresh connection is answered by a pid that was not there before.
        await probeUntil(port, (pid) => !before.includes(pid), { timeoutMs: 10_000, every: 5 }).catch(() =>
          problems.push("no new pid answered within 10 s of the reload")
        )
      } else if (event === "scale") {
        await supervised.scale(SCALED)
        tDone = now()
      } else {
        await supervised.stop()
        const refused = await refusedAt(port, 15_000)
        if (refused === undefined) problems.push("the port still accepted 15 s after the stop")
        tDone = refused ?? now()
      }
      await sleep(tailS * 1000)
    } finally {
      seen = await load.stop()
    }
    if (event !== "stop") {
      const after = await supervised.pids()
      workersAfter = after.length
      replaced = after.every((pid) => !before.includes(pid))
    }
  } catch (error) {
    problems.push((error as Error).message)
  } finally {
    await supervised.end()
  }
  // Everything this run started is gone (the load generator, the supervisor, its workers): else killed by pid.
  await sleep(200)
  const left = taggedPids()
  if (left.length > 0) {
    problems.push(`left running, killed: ${left.join(", ")}`)
    for (const pid of left) {
      try {
        process.kill(pid, "SIGKILL")
      } catch {
        // gone
      }
    }
  }
  if (seen === undefined) return { ...base, ...empty, skipped: problems.join("; "), problems }
  const failures: Record<string, number> = {}
  let lost = 0
  let refused = 0
  for (const f of seen.failures) {
    if (f.t < tEvent) continue
    failures[f.code] = (failures[f.code] ?? 0) + 1
    if (f.code === "ECONNREFUSED" && event === "stop") refused++
    else lost++
  }
  const during: Array<number> = []
  const steady: Array<number> = []
  for (let i = 0; i < seen.at.length; i++) {
    const t = seen.at[i]!
    if (seen.status[i]! < 200 || seen.status[i]! > 299) {
      if (t >= tEvent) {
        failures[`HTTP ${seen.status[i]}`] = (failures[`HTTP ${seen.status[i]}`] ?? 0) + 1
        lost++
      }
      continue
    }
    if (t >= tEvent && t <= tDone + tailS * 1000) during.push(seen.latency[i]!)
    else if (t < tEvent && t >= tEvent - (warmupS * 1000) / 2) steady.push(seen.latency[i]!)
  }
  lost += seen.totals.resets
  const failedBefore = seen.failures.filter((f) => f.t < tEvent).length
  if (failedBefore > 0) problems.push(`${failedBefore} failures before the event`)
  return {
    ...base,
    requests: seen.totals.requests,
    lost,
    refused,
    failedTotal: seen.totals.errors + seen.totals.non2xx + seen.totals.resets,
    failures,
    p99Before: percentile(steady, 0.99),
    p99During: percentile(during, 0.99),
    eventMs: tDone - tEvent,
    workersAfter,
    replaced,
    problems
  }
}

// ---------------------------------------------------------------------------
// All runs, rounds outermost, the supervisors' order rotated each round

pm2Kill()
const outcomes: Array<Outcome> = []
for (let round = 0; round < rounds; round++) {
  for (const app of apps) {
    for (const system of rotate(systems, round)) {
      for (const event of events) {
        const o = await once(app, system, event, round)
        outcomes.push(o)
        note(
          o.skipped !== undefined
            ? `${app} ${system} ${event} round ${round + 1}: not run: ${o.skipped}`
            : `${app} ${system} ${event} round ${round + 1}: ${o.lost} lost${event === "stop" ? `, ${o.refused} refused` : ""} of ${o.requests}, p99 ${fmt(o.p99During, 0)} ms (before ${fmt(o.p99Before, 0)}), ${fmt(o.eventMs, 0)} ms${o.problems.length > 0 ? `; ${o.problems.join("; ")}` : ""}`
        )
      }
    }
  }
}

const LABEL: Record<SystemName, string> = {
  "prefork-listen": `prefork --listen`,
  "prefork-cluster": "prefork --cluster",
  pm2: "PM2 cluster",
  raw: "raw node:cluster"
}
const thousands = (n: number): string => (n >= 10_000 ? `${fmt(n / 1000, 0)}k` : fmt(n, 0))

const runsOf = (app: AppName, system: SystemName, event: EventName) =>
  outcomes.filter((o) => o.app === app && o.system === system && o.event === event)

/** "0 of 41k" per round, " / " between rounds; why a run was not made. */
const cell = (runs: ReadonlyArray<Outcome>, value: (o: Outcome) => string): string =>
  runs.length === 0
    ? "–"
    : runs.every((o) => o.skipped !== undefined)
      ? "not run"
      : runs.map((o) => (o.skipped !== undefined ? "not run" : value(o))).join(" / ")

const lostCell = (o: Outcome) => `${fmt(o.lost, 0)} of ${thousands(o.requests)}`
const p99Cell = (o: Outcome) => fmt(o.p99During, 0)

const rows: Array<Array<string>> = []
for (const app of apps) {
  for (const system of systems) {
    const row = [app, LABEL[system]]
    for (const event of events) {
      const runs = runsOf(app, system, event)
      row.push(cell(runs, lostCell))
      if (event === "stop") row.push(cell(runs, (o) => thousands(o.refused)))
      row.push(cell(runs, p99Cell))
    }
    rows.push(row)
  }
}
const EVENT_TITLE: Record<EventName, string> = {
  reload: "reload",
  scale: `scale ${WORKERS} → ${SCALED}`,
  stop: "stop"
}
const headers = [
  "app",
  "supervisor",
  ...events.flatMap((e) =>
    e === "stop"
      ? ["stop: lost", "stop: refused (not a loss)", "stop: p99 ms"]
      : [`${EVENT_TITLE[e]}: failed`, `${EVENT_TITLE[e]}: p99 ms`]
  )
]

const skippedWhy = [
  ...new Set(outcomes.filter((o) => o.skipped !== undefined).map((o) => `${LABEL[o.system]} + ${o.app}: ${o.skipped}`))
]

const details: Array<Array<string>> = []
for (const app of apps) {
  for (const system of systems) {
    for (const event of events) {
      const runs = runsOf(app, system, event).filter((o) => o.skipped === undefined)
      if (runs.length === 0) continue
      const failures: Record<string, number> = {}
      for (const o of runs) for (const [k, v] of Object.entries(o.failures)) failures[k] = (failures[k] ?? 0) + v
      details.push([
        app,
        LABEL[system],
        EVENT_TITLE[event],
        runs.map((o) => thousands(o.requests)).join(" / "),
        Object.keys(failures).length === 0
          ? "none"
          : Object.entries(failures)
              .sort((a, b) => b[1] - a[1])
              .map(([k, v]) => `${v} ${k}`)
              .join(", "),
        runs.map((o) => fmt(o.failedTotal, 0)).join(" / "),
        runs.map((o) => fmt(o.p99Before, 0)).join(" / "),
        runs.map((o) => fmt(o.eventMs, 0)).join(" / "),
        event === "stop"
          ? "–"
          : runs
              .map((o) => `${o.workersAfter}${event === "reload" ? (o.replaced ? " new" : " NOT all new") : ""}`)
              .join(" / ")
      ])
    }
  }
}

const tables: Array<Table> = [
  {
    title: `Failed requests and p99 latency while workers change under load: ${WORKERS} workers, autocannon -c ${connections} (keep-alive, 1 request in flight per connection); per round, " / " between rounds`,
    headers,
    rows,
    notes: [
      "Every app is unmodified: it calls listen(PORT) on 127.0.0.1 itself, with no SIGTERM handler and no fd numbers (bench/fixtures/drain/).",
      "failed / lost: autocannon's errors (timeouts included), non-2xx answers and resets, counted from the moment the event is sent until the load stops; of N: every request of the run.",
      "For a stop, failures are counted from the moment the stop is sent until the port refuses (plus the tail): a request refused because nothing listens any more (ECONNREFUSED) was never accepted, and the client can retry elsewhere: not a loss. Every other failure (a reset, a connection closed with its request unanswered, a timeout, a 5xx) was accepted and then lost.",
      `p99: of the requests answered from the event until ${tailS} s after it was done (reload: the command returned and a new pid answered a fresh connection; scale: the command returned; stop: the port refused).`,
      "raw node:cluster: a rolling restart forks a new worker, waits for 'listening', then disconnect()s the old one; a scale-down or a stop disconnect()s workers. PM2: pm2 reload / pm2 scale <app> 2 / pm2 stop, its defaults.",
      ...(skippedWhy.length > 0 ? [`not run (the supervisor never served): ${skippedWhy.join("; ")}`] : [])
    ]
  },
  {
    title:
      "Details: failures by kind (all rounds), the steady p99 before the event, how long the event took, the workers after it",
    headers: [
      "app",
      "supervisor",
      "event",
      "requests",
      "failures from the event on, by kind",
      "failed, whole run (autocannon's errors + non2xx + resets)",
      "p99 before, ms",
      "event, ms",
      "workers after"
    ],
    rows: details,
    notes: [
      `Steady p99: the last ${warmupS / 2} s before the event. Event: from sending it until the command returned (reload, scale) or the port refused (stop).`,
      "A request still unanswered when the load stops is not counted by autocannon (its timeout is 10 s): the tail after each event is short.",
      `${outcomes.filter((o) => o.lockHeld).length} of ${outcomes.length} runs started while others' tests held ${LOCK} (after waiting up to ${lockWaitS} s for it): their latencies are noisier. 1-minute load average at each run's start: ${fmt(Math.min(...outcomes.map((o) => o.loadAverage)), 2)}–${fmt(Math.max(...outcomes.map((o) => o.loadAverage)), 2)}.`
    ]
  }
]
out(`\nMachine: ${machineLine(started)}\nCommand: ${commandLine()}\n${appVersions}; prefork built from ${code}.`)
for (const t of tables) printTable(t)
const problems = outcomes
  .filter((o) => o.problems.length > 0)
  .map((o) => `${o.app} ${o.system} ${o.event} round ${o.round + 1}: ${o.problems.join("; ")}`)
for (const p of problems) note(p)
writeResults("drain", started, tables, { code, outcomes }, [
  `${appVersions}; prefork built from ${code}.`,
  "",
  ...(problems.length > 0 ? ["Problems seen:", "", ...problems.map((p) => `- ${p}`)] : [])
])
pm2Kill()
finish(0)
