/**
 * Sockets the supervisor owns (issue: bind, then fork): what a client sees
 * while workers die or are reloaded, ours (the library with `listen`) beside
 * raw node:cluster (round-robin, restart on 'exit').
 *
 * Load, from this process on 127.0.0.1: `--connections` keep-alive loops
 * sending GETs back to back, plus a probe: a GET on a fresh connection every
 * 5 ms, whose failures say whether the port refused or reset a connection.
 *
 * 1. every worker SIGKILLed at once, `--kills` times, `--kill-every-ms` apart,
 *    under load: probe and load failures, and the longest probe outage;
 * 2. a reload under load, 1 and 4 workers (ours; raw node:cluster has none):
 *    failed requests, and whether every pid was replaced;
 * 3. throughput through 2 workers for `--duration-s`, and how requests spread
 *    over the workers (each answer names its pid).
 *
 *   node bench/sockets.ts [--rounds=3] [--duration-s=10] [--connections=32] [--kills=8] [--quick]
 */
import { spawn } from "node:child_process"
import { Agent, request } from "node:http"
import * as Path from "node:path"
import * as Readline from "node:readline"
import {
  BENCH,
  ensurePeers,
  finish,
  fmt,
  freePort,
  list,
  HOST,
  machine,
  note,
  num,
  printTable,
  requireNode,
  scratchDir,
  sleep,
  stats,
  type Table,
  track,
  watchdog,
  writeResults
} from "./lib/common.ts"

requireNode()
const rounds = num("rounds", 3, 1)
const durationS = num("duration-s", 10, 2)
const connections = num("connections", 32, 8)
const kills = num("kills", 8, 2)
const killEveryMs = num("kill-every-ms", 1000, 500)
const parts = list("parts", ["kill", "reload", "throughput"])
// PM2 (from bench/.scratch/peers) joins the kill and reload scenarios.
const systems = list("systems", ["ours", "raw", "pm2"]) as Array<System>
if (systems.includes("pm2")) ensurePeers()
watchdog(num("timeout", 1800, 300))
const started = machine()

type System = "ours" | "raw" | "pm2"

interface Primary {
  readonly ask: (line: string, answer: RegExp) => Promise<string>
  readonly stop: () => Promise<void>
}

const startPrimary = async (system: System, workers: number, port: number): Promise<Primary> => {
  const args =
    system === "pm2"
      ? [Path.join(BENCH, "fixtures", "sockets-pm2.cjs"), String(workers), String(port), scratchDir("pm2-sockets")]
      : [Path.join(BENCH, "fixtures", "sockets-primary.ts"), system, String(workers), String(port)]
  const child = track(spawn(process.execPath, args, { stdio: ["pipe", "pipe", "inherit"] }))
  const lines = Readline.createInterface({ input: child.stdout! })
  const waiting: Array<{ readonly answer: RegExp; readonly resolve: (line: string) => void }> = []
  lines.on("line", (line) => {
    const i = waiting.findIndex((w) => w.answer.test(line))
    if (i !== -1) waiting.splice(i, 1)[0]!.resolve(line)
  })
  const next = (answer: RegExp) => new Promise<string>((resolve) => waiting.push({ answer, resolve }))
  await next(/^READY$/)
  return {
    ask: (line, answer) => {
      const p = next(answer)
      child.stdin!.write(`${line}\n`)
      return p
    },
    stop: () =>
      new Promise<void>((resolve) => {
        child.once("exit", () => resolve())
        child.kill("SIGTERM")
      })
  }
}

interface Outcome {
  readonly ok: number
  readonly errors: Record<string, number>
  readonly pids: Map<number, number>
  readonly outageMs: number
}

/** Keep-alive loops plus a fresh-connection probe every 5 ms, until `stop()`; what they saw. */
const load = (port: number, loops: number) => {
  const state = { running: true }
  const agent = new Agent({ keepAlive: true, maxSockets: loops })
  const load: Outcome = { ok: 0, errors: {}, pids: new Map(), outageMs: 0 }
  const probe: Outcome = { ok: 0, errors: {}, pids: new Map(), outageMs: 0 }
  let lastProbeOk = performance.now()
  let worstGap = 0
  const once = (into: Outcome, viaAgent: boolean) =>
    new Promise<boolean>((resolve) => {
      const req = request({ host: HOST, port, path: "/", agent: viaAgent ? agent : false, timeout: 5000 }, (res) => {
        let body = ""
        res.setEncoding("utf8")
        res.on("data", (c: string) => (body += c))
        res.on("end", () => {
          ;(into as { ok: number }).ok++
          const pid = Number(body.split(" ")[1])
          into.pids.set(pid, (into.pids.get(pid) ?? 0) + 1)
          resolve(true)
        })
        res.on("error", (e: NodeJS.ErrnoException) => {
          into.errors[e.code ?? "error"] = (into.errors[e.code ?? "error"] ?? 0) + 1
          resolve(false)
        })
      })
      req.on("timeout", () => req.destroy(Object.assign(new Error("timeout"), { code: "ETIMEDOUT" })))
      req.on("error", (e: NodeJS.ErrnoException) => {
        into.errors[e.code ?? "error"] = (into.errors[e.code ?? "error"] ?? 0) + 1
        resolve(false)
      })
      req.end()
    })
  const loopsDone = Array.from({ length: loops }, async () => {
    while (state.running) await once(load, true)
  })
  const probing = (async () => {
    while (state.running) {
      const t = performance.now()
      if (await once(probe, false)) {
        worstGap = Math.max(worstGap, performance.now() - lastProbeOk)
        lastProbeOk = performance.now()
      }
      await sleep(Math.max(0, 5 - (performance.now() - t)))
    }
  })()
  return {
    stop: async () => {
      state.running = false
      await Promise.all([...loopsDone, probing])
      agent.destroy()
      return { load, probe: { ...probe, outageMs: worstGap } }
    }
  }
}

const errorCount = (o: Outcome) => Object.values(o.errors).reduce((a, b) => a + b, 0)
const errorText = (o: Outcome) =>
  Object.keys(o.errors).length === 0
    ? "0"
    : Object.entries(o.errors)
        .map(([k, v]) => `${v} ${k}`)
        .join(", ")

// 1. Every worker killed at once, repeatedly, under load.
const killRows: Array<Array<string>> = []
const killData: Array<unknown> = []
for (const system of parts.includes("kill") ? systems : []) {
  const runs: Array<{ probe: Outcome; load: Outcome }> = []
  for (let round = 0; round < rounds; round++) {
    const port = await freePort()
    const primary = await startPrimary(system, 2, port)
    const running = load(port, connections)
    await sleep(500)
    for (let k = 0; k < kills; k++) {
      const pids = JSON.parse(await primary.ask("pids", /^\[/)) as Array<number>
      for (const pid of pids) {
        try {
          process.kill(pid, "SIGKILL")
        } catch {
          // gone already
        }
      }
      await sleep(killEveryMs)
    }
    runs.push(await running.stop())
    await primary.stop()
    note(
      `kill-all ${system} round ${round + 1}: probes ${errorText(runs.at(-1)!.probe)}, load ${errorText(runs.at(-1)!.load)}`
    )
  }
  const probeErrors = stats(runs.map((r) => errorCount(r.probe)))
  const outage = stats(runs.map((r) => r.probe.outageMs))
  killRows.push([
    system,
    `${kills} × 2 workers`,
    fmt(stats(runs.map((r) => r.probe.ok + errorCount(r.probe))).median, 0),
    `${fmt(probeErrors.median, 0)} (${runs.map((r) => errorText(r.probe)).join(" / ")})`,
    fmt(outage.median, 0),
    runs.map((r) => errorText(r.load)).join(" / ")
  ])
  killData.push({
    system,
    runs: runs.map((r) => ({ probe: { ...r.probe, pids: undefined }, load: { ...r.load, pids: undefined } }))
  })
}

// 2. Reload under load (ours).
const reloadRows: Array<Array<string>> = []
const reloadData: Array<unknown> = []
const reloads = (parts.includes("reload") ? [1, 4] : []).flatMap((w) =>
  systems.filter((s) => s !== "raw").map((s) => [s, w] as const)
)
for (const [system, workers] of reloads) {
  const runs: Array<{ probe: Outcome; load: Outcome; replaced: boolean; ms: number }> = []
  for (let round = 0; round < rounds; round++) {
    const port = await freePort()
    const primary = await startPrimary(system, workers, port)
    const before = JSON.parse(await primary.ask("pids", /^\[/)) as Array<number>
    const running = load(port, connections)
    await sleep(500)
    const ms = Number((await primary.ask("reload", /^RELOADED /)).split(" ")[1])
    await sleep(500)
    const seen = await running.stop()
    const after = JSON.parse(await primary.ask("pids", /^\[/)) as Array<number>
    await primary.stop()
    runs.push({ ...seen, replaced: after.length === workers && after.every((p) => !before.includes(p)), ms })
    note(
      `reload ${system} ${workers} round ${round + 1}: ${ms} ms, probes ${errorText(seen.probe)}, load ${errorText(seen.load)}`
    )
  }
  reloadRows.push([
    system,
    String(workers),
    fmt(stats(runs.map((r) => r.ms)).median, 0),
    runs.map((r) => errorText(r.probe)).join(" / "),
    runs.map((r) => errorText(r.load)).join(" / "),
    fmt(stats(runs.map((r) => r.probe.outageMs)).median, 0),
    runs.every((r) => r.replaced) ? "yes" : "no"
  ])
  reloadData.push({
    system,
    workers,
    runs: runs.map((r) => ({ ...r, probe: { ...r.probe, pids: undefined }, load: { ...r.load, pids: undefined } }))
  })
}

// 3. Throughput and spread, 2 workers, alternating systems.
const rates: Record<System, Array<number>> = { ours: [], raw: [], pm2: [] }
const spreads: Record<System, Array<number>> = { ours: [], raw: [], pm2: [] }
const probeSpreads: Record<System, Array<number>> = { ours: [], raw: [], pm2: [] }
const busiest = (o: Outcome) => (100 * Math.max(0, ...o.pids.values())) / Math.max(1, o.ok)
for (let round = 0; round < (parts.includes("throughput") ? rounds : 0); round++) {
  for (const system of (round % 2 === 0 ? ["ours", "raw"] : ["raw", "ours"]) as Array<System>) {
    const port = await freePort()
    const primary = await startPrimary(system, 2, port)
    const warm = load(port, connections)
    await sleep(1000)
    await warm.stop()
    const running = load(port, connections)
    await sleep(durationS * 1000)
    const seen = await running.stop()
    await primary.stop()
    rates[system].push(seen.load.ok / durationS)
    // The busiest worker's share of the requests: 50 % is an even spread over 2 workers.
    spreads[system].push(busiest(seen.load))
    probeSpreads[system].push(busiest(seen.probe))
    note(
      `throughput ${system} round ${round + 1}: ${fmt(seen.load.ok / durationS, 0)} req/s, busiest ${fmt(spreads[system].at(-1)!, 0)} %`
    )
  }
}
const oursRate = stats(rates.ours).median
const rawRate = stats(rates.raw).median

const tables: Array<Table> = [
  {
    title: "Every worker SIGKILLed at once, repeatedly, under load (2 workers)",
    headers: [
      "system",
      "kills",
      "probes",
      "probes failed (per round)",
      "longest probe outage, ms",
      "keep-alive load errors (per round)"
    ],
    rows: killRows,
    notes: [
      `${connections} keep-alive connections sending back to back, and a probe GET on a fresh connection every 5 ms; ${rounds} rounds.`,
      "A keep-alive connection a killed worker held is reset with it, whatever the supervisor: load errors count those. The probe shows whether the port refused connections while no worker lived."
    ]
  },
  {
    title: "A reload under load (ours: a surge, the replacement ready before the old worker stops; PM2: pm2.reload)",
    headers: [
      "system",
      "workers",
      "reload, ms",
      "probes failed",
      "load errors",
      "longest probe outage, ms",
      "every pid replaced"
    ],
    rows: reloadRows,
    notes: [
      "raw node:cluster has no reload. Before owned sockets the library and the CLI showed 124 ms / 121 ms of outage reloading 1 worker."
    ]
  },
  {
    title: `Throughput through 2 workers, ${durationS} s, ${connections} keep-alive connections (median of ${rounds})`,
    headers: [
      "system",
      "req/s",
      "vs raw",
      "busiest worker's share, keep-alive",
      "busiest worker's share, new connections"
    ],
    rows: [
      [
        "ours (owned socket, workers accept)",
        fmt(oursRate, 0),
        `${fmt(oursRate / rawRate, 3)}×`,
        `${fmt(stats(spreads.ours).median, 0)} %`,
        `${fmt(stats(probeSpreads.ours).median, 0)} %`
      ],
      [
        "raw node:cluster (round-robin)",
        fmt(rawRate, 0),
        "1×",
        `${fmt(stats(spreads.raw).median, 0)} %`,
        `${fmt(stats(probeSpreads.raw).median, 0)} %`
      ]
    ],
    notes: [
      "The load generator runs in the benchmark's own process and shares the 2 cores with the workers and the primary."
    ]
  }
]
for (const t of tables) printTable(t)
writeResults("sockets", started, tables, { kills: killData, reloads: reloadData, rates, spreads, probeSpreads })
finish(0)
