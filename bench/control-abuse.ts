/**
 * Figure 14 — what an abusive control client costs the supervisor: its
 * event-loop delay (`perf_hooks.monitorEventLoopDelay`, 10 ms resolution)
 * while a client process (bench/fixtures/control-abuser.mjs) abuses the
 * control socket, and how long a normal `status` takes meanwhile (asked every
 * 500 ms on a fresh connection), against the same with no abuse.
 *
 * The server is this process: `Supervisor.start` with `--workers` real
 * workers (`node -e` idling, the Node spawner) and `Control.serve` with its
 * default budgets, exactly as `prefork` serves it. Scenarios, each for
 * `--seconds`:
 * - `idle`: no abuser (the baseline);
 * - `flood`: 3,600 `status` lines in one write (answers read);
 * - `floods`: 16 such connections at once;
 * - `big`: 10 MiB without a newline;
 * - `crowd`: 100 silent and 100 slow (half a request) connections.
 * After each, the workers' pids are compared with those before: a worker
 * replaced is a worker the abuse killed (must be 0).
 *
 *   node bench/control-abuse.ts [--seconds=5] [--workers=2] [--scenarios=idle,flood,floods,big,crowd] [--quick]
 */
import { spawn } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import * as Path from "node:path"
import { monitorEventLoopDelay } from "node:perf_hooks"
import { Effect, Logger, Option } from "effect"
import * as Control from "../src/cli/Control.ts"
import * as NodeProcessSpawner from "../src/node/NodeProcessSpawner.ts"
import * as Supervisor from "../src/Supervisor.ts"
import {
  finish,
  FIXTURES,
  fmt,
  list,
  machine,
  note,
  num,
  percentile,
  printTable,
  requireNode,
  type Table,
  watchdog,
  writeResults
} from "./lib/common.ts"

requireNode()
const seconds = num("seconds", 5, 2)
const workers = num("workers", 2, 2)
const scenarios = list("scenarios", ["idle", "flood", "floods", "big", "crowd"])
watchdog(60 + scenarios.length * (seconds + 20))

interface Abuse {
  readonly latencies: ReadonlyArray<number | null>
  readonly answers: number
  readonly cut: number
  readonly abusers: number
}

/** Runs the abuser process to its end: what it saw. */
const abuse = (socket: string, scenario: string): Promise<Abuse> =>
  new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [Path.join(FIXTURES, "control-abuser.mjs"), socket, scenario, String(seconds)],
      {
        stdio: ["ignore", "pipe", "inherit"]
      }
    )
    let out = ""
    child.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()))
    child.on("close", (code) =>
      code === 0 ? resolve(JSON.parse(out) as Abuse) : reject(new Error(`abuser exited ${code}`))
    )
  })

const started = machine()
const dir = mkdtempSync(Path.join(tmpdir(), "prefork-bench-control-"))
const socket = Path.join(dir, "control.sock")
const rows: Array<Array<string>> = []
const data: Array<Record<string, unknown>> = []

const program = Effect.scoped(
  Effect.gen(function* () {
    const handle = yield* Supervisor.start({
      processes: workers,
      command: process.execPath,
      args: ["-e", "setInterval(() => {}, 1 << 30)"]
    })
    yield* handle.awaitReady
    yield* Control.serve(handle, socket)
    const pids = Effect.map(handle.status, (slots) => slots.map((s) => Option.getOrNull(s.pid)))
    for (const scenario of scenarios) {
      const before = yield* pids
      const delay = monitorEventLoopDelay({ resolution: 10 })
      delay.enable()
      const seen = yield* Effect.promise(() => abuse(socket, scenario))
      delay.disable()
      const after = yield* pids
      const replaced = before.filter((pid, i) => pid !== after[i]).length
      const ok = seen.latencies.filter((l): l is number => l !== null)
      const ms = (ns: number) => ns / 1e6
      rows.push([
        scenario,
        fmt(ms(delay.percentile(50))),
        fmt(ms(delay.percentile(99))),
        fmt(ms(delay.max)),
        `${ok.length}/${seen.latencies.length}`,
        ok.length === 0 ? "-" : fmt(percentile(ok, 0.5)),
        ok.length === 0 ? "-" : fmt(Math.max(...ok)),
        String(seen.answers),
        `${seen.cut}/${seen.abusers}`,
        String(replaced)
      ])
      data.push({
        scenario,
        loopDelayMs: { p50: ms(delay.percentile(50)), p99: ms(delay.percentile(99)), max: ms(delay.max) },
        ...seen,
        workersReplaced: replaced
      })
      note(`${scenario}: loop max ${fmt(ms(delay.max))} ms, ${replaced} worker(s) replaced`)
    }
  })
).pipe(Effect.provide(NodeProcessSpawner.layer), Effect.provide(Logger.layer([])))

await Effect.runPromise(program)
rmSync(dir, { recursive: true, force: true })

const table: Table = {
  title: `Control socket under abuse: the supervisor's event loop and a normal status (${workers} workers, ${seconds} s per scenario)`,
  headers: [
    "scenario",
    "loop delay p50 (ms)",
    "p99 (ms)",
    "max (ms)",
    "normal status answered",
    "its latency p50 (ms)",
    "max (ms)",
    "answers to the abuser",
    "abusers cut",
    "workers replaced"
  ],
  rows,
  notes: [
    "loop delay: perf_hooks.monitorEventLoopDelay in the supervising process (10 ms resolution: ~10 ms is an idle loop)",
    "a normal status includes its 200 ms CPU sample; one sample is shared by every request that waits on it",
    "before the fix (issue 16, commit 18500bb, this benchmark): flood blocked the loop for 8.7 s (max delay 8,674 ms) and the normal status got no answer within 5 s; on a machine with more processes the same write blocked it 35 s, and the heartbeat then killed every healthy worker"
  ]
}
printTable(table)
writeResults("control-abuse", started, [table], data)
finish(0)
