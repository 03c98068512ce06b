/**
 * `prefork --metrics` under abusive clients (issue 16): what a scraper sees,
 * and what prefork holds, while idle and slowloris clients (a header byte a
 * second) take connections.
 *
 * prefork (the bundle, dist/bin/prefork.js, built first) runs one `sleep` worker under
 * `ulimit -n <nofile>` (1,024 by default: a connection cap of 64). Scenarios,
 * each for `--duration-s`:
 *
 * 1. quiet: no other client;
 * 2. 30 slowloris clients (under the cap): how long the head's deadline lets
 *    one live;
 * 3. 1,000 idle + 100 slowloris clients, opened once;
 * 4. the same, each client reconnecting 50 ms after it is cut.
 *
 * Figures: a GET /metrics every 200 ms (fresh connection, 10 s timeout):
 * median and largest time to the whole answer, and failures; prefork's RSS and
 * open descriptors (largest of samples every 50 ms); how long a slowloris
 * connection lived (accept to cut) and how many were cut.
 *
 * This process holds 1,100 sockets: raise its own limit first.
 *
 *   ulimit -n 4096 && node bench/metrics-abuse.ts [--duration-s=15] [--nofile=1024] [--idle=1000] [--slow=100]
 *     [--scenarios=quiet,slow,held,reconnecting] [--quick]
 */
import { spawn, spawnSync } from "node:child_process"
import { readdirSync } from "node:fs"
import { request } from "node:http"
import * as Net from "node:net"
import * as Path from "node:path"
import {
  finish,
  fmt,
  HOST,
  list,
  machine,
  mib,
  note,
  num,
  now,
  percentile,
  printTable,
  procSample,
  requireNode,
  ROOT,
  sleep,
  type Table,
  track,
  waitFor,
  watchdog,
  writeResults
} from "./lib/common.ts"

requireNode()
const durationS = num("duration-s", 15, 4)
const nofile = num("nofile", 1024, 1024)
const idleClients = num("idle", 1000, 200)
const slowClients = num("slow", 100, 20)
watchdog(num("timeout", 600, 120))
const started = machine()

const build = spawnSync(process.execPath, [Path.join(ROOT, "scripts", "build-cli.mjs")], { stdio: "inherit" })
if (build.status !== 0) finish(1)

interface Prefork {
  readonly pid: number
  readonly port: number
  readonly stop: () => Promise<void>
}

const startPrefork = async (): Promise<Prefork> => {
  // The bundle itself: bin/prefork.js runs the TypeScript sources when they are newer than it.
  const bin = Path.join(ROOT, "dist", "bin", "prefork.js")
  const command = `ulimit -n ${nofile} && exec '${process.execPath}' '${bin}' -n 1 --control off --metrics ${HOST}:0 -- sleep 3600`
  const child = track(spawn("sh", ["-c", command], { stdio: ["ignore", "ignore", "pipe"] }))
  let stderr = ""
  child.stderr!.setEncoding("utf8")
  child.stderr!.on("data", (chunk: string) => (stderr += chunk))
  const port = await waitFor(
    "prefork's metrics address",
    () => {
      const m = /Metrics on http:\/\/127\.0\.0\.1:(\d+)\/metrics/.exec(stderr)
      return m === null ? undefined : Number(m[1])
    },
    20_000
  )
  return {
    pid: child.pid!,
    port,
    stop: () =>
      new Promise<void>((resolve) => {
        child.once("exit", () => resolve())
        child.kill("SIGTERM")
      })
  }
}

/** One GET /metrics on a fresh connection: milliseconds to the whole answer, or undefined if it failed. */
const scrape = (port: number) =>
  new Promise<number | undefined>((resolve) => {
    const t0 = now()
    const req = request({ host: HOST, port, path: "/metrics", agent: false, timeout: 10_000 }, (res) => {
      res.resume()
      res.on("end", () => resolve(res.statusCode === 200 ? now() - t0 : undefined))
    })
    req.on("timeout", () => req.destroy())
    req.on("error", () => resolve(undefined))
    req.end()
  })

interface Abuse {
  readonly lifetimes: Array<number>
  readonly stop: () => void
}

/** Opens the clients; a slowloris sends a header byte a second after its request line. */
const abuse = (port: number, idle: number, slow: number, reconnect: boolean): Abuse => {
  const sockets = new Set<Net.Socket>()
  const lifetimes: Array<number> = []
  let stopped = false
  const open = (isSlow: boolean) => {
    if (stopped) return
    const socket = Net.connect({ host: HOST, port })
    sockets.add(socket)
    let t0 = 0
    let timer: NodeJS.Timeout | undefined
    socket.on("connect", () => {
      t0 = now()
      if (!isSlow) return
      socket.write("GET /metrics HTTP/1.1\r\nX-Slow: ")
      timer = setInterval(() => socket.write("a"), 1000)
    })
    // Read what the server says (a 408), so its close is seen at once.
    socket.resume()
    socket.on("error", () => {})
    socket.on("close", () => {
      clearInterval(timer)
      sockets.delete(socket)
      if (isSlow && t0 > 0 && !stopped) lifetimes.push(now() - t0)
      if (reconnect) setTimeout(() => open(isSlow), 50)
    })
  }
  for (let i = 0; i < idle + slow; i++) open(i % Math.ceil((idle + slow) / Math.max(1, slow)) === 0 && slow > 0)
  return {
    lifetimes,
    stop: () => {
      stopped = true
      for (const socket of sockets) socket.destroy()
    }
  }
}

const fdCount = (pid: number): number => {
  try {
    return readdirSync(`/proc/${pid}/fd`).length
  } catch {
    return 0
  }
}

interface Row {
  readonly scenario: string
  readonly scrapes: Array<number>
  readonly failed: number
  readonly rssMiB: number
  readonly fds: number
  readonly baseFds: number
  readonly lifetimes: Array<number>
}

const run = async (scenario: string, idle: number, slow: number, reconnect: boolean): Promise<Row> => {
  const p = await startPrefork()
  // The prefork process is sh's exec: the same pid.
  await sleep(500)
  const baseFds = fdCount(p.pid)
  let fds = baseFds
  let rss = 0
  const sampler = setInterval(() => {
    fds = Math.max(fds, fdCount(p.pid))
    rss = Math.max(rss, procSample(p.pid)?.rssKiB ?? 0)
  }, 50)
  const clients = abuse(p.port, idle, slow, reconnect)
  const scrapes: Array<number> = []
  let failed = 0
  const end = now() + durationS * 1000
  while (now() < end) {
    const took = await scrape(p.port)
    if (took === undefined) failed++
    else scrapes.push(took)
    await sleep(200)
  }
  clients.stop()
  clearInterval(sampler)
  await p.stop()
  note(`${scenario}: ${scrapes.length} scrapes, ${failed} failed, ${clients.lifetimes.length} slowloris cut`)
  return { scenario, scrapes, failed, rssMiB: mib(rss), fds, baseFds, lifetimes: clients.lifetimes }
}

const scenarios = list("scenarios", ["quiet", "slow", "held", "reconnecting"])
const rows: Array<Row> = []
if (scenarios.includes("quiet")) rows.push(await run("quiet", 0, 0, false))
if (scenarios.includes("slow")) rows.push(await run("30 slowloris", 0, 30, false))
if (scenarios.includes("held")) {
  rows.push(await run(`${idleClients} idle + ${slowClients} slowloris`, idleClients, slowClients, false))
}
if (scenarios.includes("reconnecting")) {
  rows.push(await run(`${idleClients} idle + ${slowClients} slowloris, reconnecting`, idleClients, slowClients, true))
}

const ms = (values: ReadonlyArray<number>, p: number) => (values.length === 0 ? "-" : fmt(percentile(values, p / 100)))
const table: Table = {
  title: `prefork --metrics under abusive clients (ulimit -n ${nofile}, ${durationS} s each)`,
  headers: [
    "scenario",
    "scrape p50 ms",
    "scrape max ms",
    "scrapes failed",
    "RSS MiB",
    "fds (before)",
    "slowloris life p50 s",
    "max s",
    "cut"
  ],
  rows: rows.map((r) => [
    r.scenario,
    ms(r.scrapes, 50),
    ms(r.scrapes, 100),
    `${r.failed}/${r.failed + r.scrapes.length}`,
    fmt(r.rssMiB),
    `${r.fds} (${r.baseFds})`,
    r.lifetimes.length === 0 ? "-" : fmt(percentile(r.lifetimes, 0.5) / 1000),
    r.lifetimes.length === 0 ? "-" : fmt(percentile(r.lifetimes, 1) / 1000),
    String(r.lifetimes.length)
  ]),
  notes: [
    "fds: the most prefork held at once (sampled every 50 ms), and before the clients came.",
    "A slowloris's life: from its connect to the server closing it (the head's deadline, or its eviction at the cap)."
  ]
}
printTable(table)
writeResults("metrics-abuse", started, [table], rows)
finish(0)
