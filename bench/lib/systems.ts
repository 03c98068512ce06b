/**
 * The systems under comparison, each started the same way from a benchmark:
 *
 * - `ours`: `Supervisor.start` (cluster mode, `NodeProcessSpawner.layer`), the
 *   package compiled to JS, public entry points (bench/fixtures/ours-primary.mjs);
 * - `ours-deep`: the same, importing only the modules it needs (no
 *   `effect-prefork/node`, so no `@effect/platform-node`);
 * - `ours-bundled`: the same primary bundled into one file with Effect inside
 *   (bench/fixtures/ours-bundled-primary.mjs, bundled by `buildOurs`), as
 *   docs/production.md recommends for production;
 * - `raw`: a hand-written `node:cluster` restart loop, the floor
 *   (bench/fixtures/raw-primary.cjs);
 * - `throng`: throng (latest) (bench/fixtures/throng-primary.cjs);
 * - `pm2`: PM2 cluster mode (latest), driven through PM2's programmatic API
 *   with its home in bench/.scratch/pm2-home; its daemon is the primary;
 * - `before`, `before-bundled`: `ours` and `ours-bundled` running the package
 *   at another commit (`--before=REF`, built by bench/lib/before.ts, which sets
 *   BENCH_BEFORE_DIST and BENCH_BEFORE_BUNDLED): the same fixtures, the other
 *   build, side by side in one run. `withBefore` adds them to a benchmark's
 *   default systems when they are built.
 *
 * Every primary is started detached (it leads its own process group, which
 * its cluster workers share) with an IPC channel to the benchmark (see
 * bench/fixtures/control.cjs) and its output in bench/.scratch/logs.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import { closeSync, existsSync, openSync, readFileSync, writeFileSync } from "node:fs"
import { createRequire } from "node:module"
import * as Path from "node:path"
import { beforeFromFlag } from "./before.ts"
import {
  FIXTURES,
  list,
  note,
  now,
  onCleanup,
  OURS_BUNDLED_PRIMARY,
  OURS_DIST,
  PEERS,
  peerDir,
  scratchDir,
  sleep,
  track,
  waitFor
} from "./common.ts"

export type SystemName =
  | "ours"
  | "ours-bundled"
  | "ours-deep"
  | "ours-nodrain"
  | "before"
  | "before-bundled"
  | "raw"
  | "throng"
  | "pm2"
export const ALL_SYSTEMS: ReadonlyArray<SystemName> = ["ours", "ours-bundled", "raw", "throng", "pm2"]
const BEFORE_SYSTEMS: ReadonlyArray<SystemName> = ["before", "before-bundled"]

export const isSystem = (s: string): s is SystemName =>
  (ALL_SYSTEMS as ReadonlyArray<string>).includes(s) ||
  s === "ours-deep" ||
  s === "ours-nodrain" ||
  (BEFORE_SYSTEMS as ReadonlyArray<string>).includes(s)

/** The compiled package at the "before" commit (bench/lib/before.ts), when a run built it. */
const beforeDist = (): string | undefined => process.env.BENCH_BEFORE_DIST || undefined

export const parseSystems = (names: ReadonlyArray<string>): Array<SystemName> =>
  names.map((s) => {
    if (!isSystem(s))
      throw new Error(
        `unknown system ${s}: use ours, ours-bundled, ours-deep, ours-nodrain, before, before-bundled, raw, throng or pm2`
      )
    if ((BEFORE_SYSTEMS as ReadonlyArray<string>).includes(s) && beforeDist() === undefined)
      throw new Error(`system ${s} runs the package at another commit: give --before=REF (e.g. --before=4fdb599)`)
    return s
  })

/**
 * A benchmark's default systems, with `before` right after `ours` and
 * `before-bundled` right after `ours-bundled` when the "before" build is
 * there (`--before=REF`); unchanged otherwise.
 */
export const withBefore = (defaults: ReadonlyArray<SystemName>): Array<SystemName> =>
  beforeDist() === undefined
    ? [...defaults]
    : defaults.flatMap((s): Array<SystemName> =>
        s === "ours" ? ["ours", "before"] : s === "ours-bundled" ? ["ours-bundled", "before-bundled"] : [s]
      )

export interface StartOptions {
  readonly workers: number
  readonly port: number
  /** Absolute path of the worker script. */
  readonly workerScript: string
  readonly env?: Readonly<Record<string, string>> | undefined
  /** Start the primary with --expose-gc (so `gc` requests collect first). Not for PM2. */
  readonly exposeGc?: boolean | undefined
}

export interface Running {
  readonly system: string
  /** Just before the primary process was spawned (PM2: before connecting, which starts its daemon). */
  readonly t0: number
  /** When the primary began supervising (its own stamp; PM2: just before `pm2.start`). */
  readonly begin: Promise<number>
  /** The supervising process: the primary (PM2: its daemon). */
  readonly pid: () => number
  /** When the primary stamped `label` (not for PM2). */
  readonly stamp: (label: string) => Promise<number>
  /** A control request (not for PM2). */
  readonly request: (message: Record<string, unknown>, timeoutMs?: number) => Promise<Record<string, any>>
  /** Stops gracefully, bounded; kills the group if it does not end in time. */
  readonly stop: () => Promise<void>
}

/**
 * `--profile-primary=<system>` (or BENCH_PROFILE_PRIMARY): that system's
 * primaries run with --cpu-prof, profiles in bench/.scratch/prof.
 */
const profileArgs = (system: string): Array<string> => {
  const wanted = (
    process.argv.find((a) => a.startsWith("--profile-primary="))?.slice(18) ??
    process.env.BENCH_PROFILE_PRIMARY ??
    ""
  ).split(",")
  return wanted.includes(system) ? ["--cpu-prof", `--cpu-prof-dir=${scratchDir("prof")}`] : []
}

/**
 * `--primary-node-args=--max-semi-space-size=1,…` (or BENCH_PRIMARY_NODE_ARGS)
 * and `--primary-env=MALLOC_ARENA_MAX=2,…` (or BENCH_PRIMARY_ENV): Node flags
 * and environment for every primary but PM2's daemon, to try a setting on all
 * systems alike.
 */
const primaryNodeArgs = (): Array<string> => list("primary-node-args", [])
const primaryEnv = (): Record<string, string> =>
  Object.fromEntries(
    list("primary-env", []).map((kv) => {
      const i = kv.indexOf("=")
      if (i <= 0) throw new Error(`--primary-env: expected NAME=value, got ${kv}`)
      return [kv.slice(0, i), kv.slice(i + 1)]
    })
  )

let logSeq = 0
const logFile = (system: string): string => Path.join(scratchDir("logs"), `${system}-${process.pid}-${++logSeq}.log`)

const killGroup = (pid: number | undefined): void => {
  if (pid === undefined) return
  try {
    process.kill(-pid, "SIGKILL")
  } catch {
    // the group is gone
  }
}

const PRIMARY_SCRIPTS: Record<Exclude<SystemName, "pm2" | "before" | "before-bundled">, string> = {
  ours: "ours-primary.mjs",
  "ours-bundled": OURS_BUNDLED_PRIMARY,
  "ours-deep": "ours-primary.mjs",
  // Ours with the workers' HTTP drain off (drain: false): what the drain costs a request.
  "ours-nodrain": "ours-primary.mjs",
  raw: "raw-primary.cjs",
  throng: "throng-primary.cjs"
}

/**
 * Starts a primary script of bench/fixtures with the control channel
 * (bench/fixtures/control.cjs). `system` names it in logs and messages.
 */
export const startPrimary = (system: string, script: string, options: StartOptions): Running => {
  const log = openSync(logFile(system), "a")
  const env: Record<string, string | undefined> = {
    ...process.env,
    ...primaryEnv(),
    ...options.env,
    BENCH_PORT: String(options.port),
    BENCH_WORKERS: String(options.workers),
    BENCH_WORKER_SCRIPT: options.workerScript,
    // A build of the package other than this tree's (startWithDist), when asked.
    BENCH_OURS_DIST: options.env?.BENCH_OURS_DIST ?? OURS_DIST,
    BENCH_OURS_ENTRY: system.endsWith("-deep") ? "deep" : "public",
    ...(system === "ours-nodrain" ? { BENCH_OURS_DRAIN: "0" } : {}),
    BENCH_PEERS: PEERS
  }
  delete env.NODE_OPTIONS
  const t0 = now()
  const child: ChildProcess = track(
    spawn(
      process.execPath,
      [...(options.exposeGc ? ["--expose-gc"] : []), ...primaryNodeArgs(), ...profileArgs(system), script],
      {
        env,
        stdio: ["ignore", log, log, "ipc"],
        detached: true
      }
    )
  )
  closeSync(log)
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve()
    else child.once("exit", () => resolve())
  })

  let nextId = 0
  const pending = new Map<number, (reply: Record<string, any>) => void>()
  const stamps = new Map<
    string,
    { promise: Promise<number>; resolve: (t: number) => void; reject: (e: Error) => void }
  >()
  const stampOf = (label: string) => {
    let entry = stamps.get(label)
    if (entry === undefined) {
      let resolve: (t: number) => void = () => {}
      let reject: (e: Error) => void = () => {}
      const promise = new Promise<number>((res, rej) => {
        resolve = res
        reject = rej
      })
      promise.catch(() => {})
      entry = { promise, resolve, reject }
      stamps.set(label, entry)
    }
    return entry
  }
  child.on("message", (m: any) => {
    if (m?.type === "stamp" && typeof m.label === "string") stampOf(m.label).resolve(m.t)
    else if (m?.type === "reply") {
      const f = pending.get(m.id)
      pending.delete(m.id)
      f?.(m)
    }
  })
  child.once("exit", (code, signal) => {
    for (const [label, entry] of stamps)
      entry.reject(new Error(`${system} primary exited (${code ?? signal}) before stamping ${label}`))
    for (const f of pending.values()) f({ type: "reply", error: `primary exited (${code ?? signal})` })
    pending.clear()
  })

  const request = (message: Record<string, unknown>, timeoutMs = 30_000) =>
    new Promise<Record<string, any>>((resolve, reject) => {
      if (!child.connected) return reject(new Error(`${system} primary is not connected`))
      const id = ++nextId
      const timer = setTimeout(() => {
        pending.delete(id)
        reject(new Error(`${system}: no answer to ${JSON.stringify(message)} within ${timeoutMs} ms`))
      }, timeoutMs)
      pending.set(id, (reply) => {
        clearTimeout(timer)
        if (typeof reply.error === "string") reject(new Error(reply.error))
        else resolve(reply)
      })
      child.send({ ...message, id })
    })

  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null && child.connected) {
      child.send({ type: "stop", deadlineMs: 10_000 })
    }
    const inTime = await Promise.race([exited.then(() => true), sleep(15_000).then(() => false)])
    if (!inTime) note(`${system} primary did not stop within 15 s: killing its group`)
    // Whatever is left in the group we created (a worker the primary did not reap) goes too.
    killGroup(child.pid)
    await Promise.race([exited, sleep(2000)])
  }

  const stamp = (label: string) => {
    const entry = stampOf(label)
    if (child.exitCode !== null || child.signalCode !== null) {
      entry.reject(new Error(`${system} primary exited before stamping ${label}`))
    }
    return entry.promise
  }
  return { system, t0, begin: stamp("t0"), stamp, pid: () => child.pid!, request, stop }
}

// ---------------------------------------------------------------------------
// PM2

interface Pm2Api {
  connect(cb: (err: Error | null) => void): void
  start(options: Record<string, unknown>, cb: (err: Error | null) => void): void
  delete(name: string, cb: (err: Error | null) => void): void
  killDaemon(cb: (err: Error | null) => void): void
  disconnect(cb?: () => void): void
}

const PM2_HOME = (): string => scratchDir("pm2-home")
let pm2CleanupRegistered = false

/** `pm2 kill` with our own PM2_HOME: stops PM2's daemon and every app it runs. */
export const pm2Kill = (): void => {
  const home = PM2_HOME()
  if (!existsSync(Path.join(home, "pm2.pid")) && !existsSync(Path.join(home, "rpc.sock"))) return
  spawnSync(process.execPath, [Path.join(peerDir("pm2"), "bin", "pm2"), "kill", "--silent"], {
    env: { ...process.env, PM2_HOME: home, PM2_DISABLE_VERSION_CHECK: "true" },
    stdio: "ignore",
    timeout: 30_000
  })
}

const pm2Module = (): { custom: new (options: Record<string, unknown>) => Pm2Api } => {
  const home = PM2_HOME()
  // PM2 reads these when it is loaded: its home here, no version check, no banner.
  process.env.PM2_HOME = home
  process.env.PM2_DISABLE_VERSION_CHECK = "true"
  if (!existsSync(Path.join(home, "touch"))) writeFileSync(Path.join(home, "touch"), String(Date.now()))
  if (!pm2CleanupRegistered) {
    pm2CleanupRegistered = true
    onCleanup(pm2Kill)
  }
  return createRequire(Path.join(PEERS, "package.json"))("pm2")
}

const call = (what: string, f: (cb: (err: Error | null) => void) => void, timeoutMs = 30_000): Promise<void> =>
  new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`pm2 ${what}: no answer within ${timeoutMs} ms`)), timeoutMs)
    f((err) => {
      clearTimeout(timer)
      if (err) reject(err instanceof Error ? err : new Error(`pm2 ${what}: ${JSON.stringify(err)}`))
      else resolve()
    })
  })

let pm2Seq = 0

const startPm2 = async (options: StartOptions): Promise<Running> => {
  const PM2 = pm2Module()
  const home = PM2_HOME()
  const pm2 = new PM2.custom({ pm2_home: home, daemon_mode: true })
  const name = `bench-${process.pid}-${++pm2Seq}`
  const t0 = now()
  await call("connect", (cb) => pm2.connect(cb))
  const pid = await waitFor(
    "PM2's daemon pid file",
    () => {
      try {
        const n = Number(readFileSync(Path.join(home, "pm2.pid"), "utf8"))
        return Number.isInteger(n) && n > 0 ? n : undefined
      } catch {
        return undefined
      }
    },
    10_000
  )
  const begin = now()
  await call("start", (cb) =>
    pm2.start(
      {
        name,
        script: options.workerScript,
        exec_mode: "cluster",
        instances: options.workers,
        env: {
          ...options.env,
          BENCH_PORT: String(options.port),
          BENCH_TAGS: process.env.BENCH_TAGS ?? ""
        },
        // Never stop restarting during a benchmark (PM2 gives up after 16 quick restarts by default).
        max_restarts: 1_000_000_000,
        autorestart: true,
        vizion: false,
        out_file: "/dev/null",
        error_file: "/dev/null"
      },
      cb
    )
  )
  const stop = async () => {
    try {
      await call("delete", (cb) => pm2.delete(name, cb), 20_000)
      await call("killDaemon", (cb) => pm2.killDaemon(cb), 20_000)
    } catch (error) {
      note(`pm2 stop: ${String(error)}; running pm2 kill`)
      pm2Kill()
    } finally {
      pm2.disconnect()
    }
    // The daemon is gone when its pid is: wait for it, bounded.
    await waitFor("PM2's daemon to exit", () => (existsSync(`/proc/${pid}`) ? undefined : true), 10_000).catch(() => {
      note("PM2's daemon still there after killDaemon: running pm2 kill")
      pm2Kill()
    })
  }
  return {
    system: "pm2",
    t0,
    begin: Promise.resolve(begin),
    pid: () => pid,
    stamp: () => Promise.reject(new Error("no control channel into PM2's daemon")),
    request: () => Promise.reject(new Error("no control channel into PM2's daemon")),
    stop
  }
}

/**
 * A benchmark's systems: `--systems=…`, else `defaults` with the before
 * systems added (`withBefore`). `--before=REF` (or BENCH_BEFORE_REF) builds
 * that package first, unless a run already did (bench/lib/before.ts).
 */
export const chooseSystems = async (defaults: ReadonlyArray<SystemName>): Promise<Array<SystemName>> => {
  await beforeFromFlag()
  return parseSystems(list("systems", withBefore(defaults)))
}

/**
 * The system a row's "ours/peer" ratio takes as ours: `ours-bundled` for
 * `before-bundled` (after/before of the bundled primary), `ours` otherwise.
 */
export const oursFor = (system: SystemName): SystemName => (system === "before-bundled" ? "ours-bundled" : "ours")

/**
 * A table note saying what the before rows are, when there are any (and, for
 * a table with an "ours/peer" column, what it is on them).
 */
export const beforeNotes = (systems: ReadonlyArray<string>, oursPeer = true): Array<string> =>
  systems.some((s) => s.startsWith("before"))
    ? [
        `before, before-bundled: ours and ours-bundled running the package at ${process.env.BENCH_BEFORE_REF ?? "?"} (--before)` +
          (oursPeer
            ? "; on their rows ours/peer is after/before (ours-bundled/before-bundled for the bundled one)."
            : ".")
      ]
    : []

/**
 * The `ours` primary (bench/fixtures/ours-primary.mjs) running the compiled
 * package in `dist` rather than this tree's: `before`, and bench/churn.ts
 * `--dists=name=DIR`. `system` names it in logs and tables.
 */
export const startWithDist = (system: string, dist: string, options: StartOptions): Running =>
  startPrimary(system, Path.join(FIXTURES, "ours-primary.mjs"), {
    ...options,
    env: { ...options.env, BENCH_OURS_DIST: dist }
  })

export const startSystem = (system: SystemName, options: StartOptions): Promise<Running> =>
  system === "pm2"
    ? startPm2(options)
    : system === "before"
      ? Promise.resolve(startWithDist(system, beforeDist() ?? "", options))
      : system === "before-bundled"
        ? Promise.resolve(startPrimary(system, process.env.BENCH_BEFORE_BUNDLED ?? "", options))
        : Promise.resolve(startPrimary(system, Path.resolve(FIXTURES, PRIMARY_SCRIPTS[system]), options))

export const HTTP_WORKER = Path.join(FIXTURES, "http-worker.cjs")
export const CHURN_WORKER = Path.join(FIXTURES, "churn-worker.cjs")

/** Systems that need the peers installed. */
export const needsPeers = (systems: ReadonlyArray<SystemName>): boolean =>
  systems.some((s) => s === "pm2" || s === "throng")
