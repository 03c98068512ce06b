/**
 * FAULTS.md rows 19, 21 and 22 with real processes, in every mode: the
 * supervisor runs in a process of its own (`fixtures/primary.ts`, or
 * `fixtures/run-worker.ts` for `Prefork.run`), and the test kills it with
 * SIGKILL, sends Ctrl-C to its process group, or sends it SIGTERM.
 */
import { existsSync, readFileSync } from "node:fs"
import * as Path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import type { Mode } from "../../src/ProcessSpawner.ts"
import {
  awaitExit,
  filesStartingWith,
  freePort,
  type Primary,
  spawnPrimary,
  waitHttp,
  waitStarted
} from "../helpers/primary.ts"
import { assertNoneLeft, eventually, pidsWithTag } from "../helpers/procs.ts"
import { fixture, tempDir } from "../helpers/supervise.ts"

const N = 2
const modes: ReadonlyArray<Mode> = ["command", "module", "cluster"]

/** `primary.ts` supervising N `signal-log.js` workers in `mode`. */
const supervisorPrimary = (mode: Mode, dir: string, detached = false, env: Record<string, string> = {}) =>
  spawnPrimary(
    "primary.ts",
    [
      JSON.stringify({
        mode,
        processes: N,
        command: mode === "command" ? process.execPath : fixture("signal-log.js"),
        args: mode === "command" ? [fixture("signal-log.js"), dir] : [dir],
        stdio: "ignore",
        ...(mode === "cluster" ? { ready: "spawn" } : {}),
        stopTimeout: "3 seconds",
        maxRestarts: 5
      })
    ],
    { detached, env }
  )

/** `Prefork.run` under `Prefork.runMain`: N cluster workers of `run-worker.ts` in "serve" mode. */
const runPrimary = (dir: string, detached = false) =>
  spawnPrimary("run-worker.ts", [String(N), dir, "serve"], { detached })

/** Waits until every worker has installed its signal handlers (it creates `ready-<task id>`). */
const allReady = (primary: Primary, dir: string) =>
  eventually(() => {
    if (primary.exited() !== undefined) throw new Error(`the primary exited early:\n${primary.lines.join("\n")}`)
    return filesStartingWith(dir, "ready-").length === N || undefined
  }, "15 seconds")

/** The lines `<SIGNAL> <task id> <pid>` the workers logged. */
const signalLines = (dir: string): Array<string> => {
  const file = Path.join(dir, "signals")
  return existsSync(file)
    ? readFileSync(file, "utf8")
        .trim()
        .split("\n")
        .filter((l) => l.length > 0)
    : []
}

/** Each worker pid that logged ready got exactly one SIGTERM, and nothing was restarted. */
const assertOneTermEach = (primary: Primary, dir: string) => {
  const pids = filesStartingWith(dir, "ready-")
    .map((f) => readFileSync(Path.join(dir, f), "utf8").trim())
    .sort()
  const terms = signalLines(dir).filter((l) => l.startsWith("SIGTERM "))
  assert.deepStrictEqual(terms.map((l) => l.split(" ")[2]).sort(), pids, signalLines(dir).join("\n"))
  assert.deepStrictEqual(
    terms.map((l) => l.split(" ")[1]).sort(),
    Array.from({ length: N }, (_, i) => String(i))
  )
  assert.isFalse(
    primary.lines.some((l) => l.includes("restarting")),
    primary.lines.join("\n")
  )
  assert.isFalse(
    primary.events().some((e) => e._tag === "Started" && e.pid !== undefined && !pids.includes(String(e.pid)))
  )
}

describe("row 19: kill -9 the supervisor process", () => {
  for (const mode of modes) {
    it.live(`${mode} mode: every worker exits within about 2 s`, () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const primary = yield* supervisorPrimary(mode, dir)
          yield* allReady(primary, dir)
          yield* waitStarted(primary, N)
          // The primary, its N workers and its watchdog.
          yield* eventually(() => pidsWithTag(primary.tag).length === N + 2 || undefined, "2 seconds")
          const t0 = Date.now()
          process.kill(primary.pid, "SIGKILL")
          yield* assertNoneLeft(primary.tag, "3 seconds")
          assert.isBelow(Date.now() - t0, 3000)
          const exit = yield* awaitExit(primary, "1 second")
          assert.strictEqual(exit.signal, "SIGKILL")
          // Killed by the kernel (pdeathsig) or gone with the IPC channel: no SIGTERM, no cleanup.
          assert.deepStrictEqual(
            signalLines(dir).filter((l) => l.startsWith("SIGTERM")),
            []
          )
        })
      )
    )
  }
})

describe("row 19 where the kernel cannot help (no setpriv, as on macOS): the watchdog", () => {
  for (const mode of ["command", "module"] as const) {
    it.live(`${mode} mode: kill -9 of the primary, and the watchdog kills every worker within about 2 s`, () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const primary = yield* supervisorPrimary(mode, dir, false, {
            PREFORK_TEST_SPAWNER: JSON.stringify({ parentDeathSignal: false, watchdog: true })
          })
          yield* allReady(primary, dir)
          yield* waitStarted(primary, N)
          // The primary, its N workers and the watchdog.
          yield* eventually(() => pidsWithTag(primary.tag).length === N + 2 || undefined, "2 seconds")
          process.kill(primary.pid, "SIGKILL")
          yield* assertNoneLeft(primary.tag, "3 seconds")
        })
      )
    )
  }

  it.live("a primary that ends normally takes its watchdog with it", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const dir = yield* tempDir
        const primary = yield* supervisorPrimary("command", dir, false, {
          PREFORK_TEST_SPAWNER: JSON.stringify({ parentDeathSignal: false, watchdog: true })
        })
        yield* allReady(primary, dir)
        process.kill(primary.pid, "SIGTERM")
        const exit = yield* awaitExit(primary, "8 seconds")
        assert.deepStrictEqual(exit, { code: 0, signal: null }, primary.lines.join("\n"))
        assertOneTermEach(primary, dir)
        yield* assertNoneLeft(primary.tag)
      })
    )
  )
})

describe("row 19: kill -9 the primary of Prefork.run", () => {
  it.live("the workers notice the lost primary, run their finalizers and exit within about a second", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const dir = yield* tempDir
        const primary = yield* runPrimary(dir)
        yield* allReady(primary, dir)
        process.kill(primary.pid, "SIGKILL")
        yield* assertNoneLeft(primary.tag, "3 seconds")
        assert.strictEqual(filesStartingWith(dir, "released-").length, N)
      })
    )
  )
})

describe("row 21: Ctrl-C to the primary's process group", () => {
  for (const mode of modes) {
    it.live(`${mode} mode: each worker gets SIGTERM once, nothing restarts, the primary exits`, () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const primary = yield* supervisorPrimary(mode, dir, true)
          yield* allReady(primary, dir)
          yield* waitStarted(primary, N)
          process.kill(-primary.pid, "SIGINT")
          const exit = yield* awaitExit(primary, "8 seconds")
          assert.deepStrictEqual(exit, { code: 0, signal: null }, primary.lines.join("\n"))
          assertOneTermEach(primary, dir)
          // Every worker leads its own process group (cluster workers through setsid): Ctrl-C reaches only the primary.
          assert.deepStrictEqual(
            signalLines(dir).filter((l) => l.startsWith("SIGINT")),
            []
          )
          assert.isFalse(primary.events().some((e) => e._tag === "Exited"))
          yield* assertNoneLeft(primary.tag)
        })
      )
    )
  }

  it.live("Prefork.run with runMain: cluster workers ignore the SIGINT, get SIGTERM once, run their finalizers", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const dir = yield* tempDir
        const primary = yield* runPrimary(dir, true)
        yield* allReady(primary, dir)
        process.kill(-primary.pid, "SIGINT")
        const exit = yield* awaitExit(primary, "8 seconds")
        assert.deepStrictEqual(exit, { code: 0, signal: null }, primary.lines.join("\n"))
        assertOneTermEach(primary, dir)
        assert.strictEqual(filesStartingWith(dir, "released-").length, N)
        assert.isFalse(primary.lines.includes("DONE 0"))
        yield* assertNoneLeft(primary.tag)
      })
    )
  )
})

describe("row 21 for Tornado-style workers (Prefork.forkProcesses, Node's default signal handling)", () => {
  it.live("Ctrl-C to the group: the workers are left to the primary, which stops each once; no restart, exit 0", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const port = yield* freePort
        const primary = yield* spawnPrimary("tornado-plain.ts", [String(N), String(port)], { detached: true })
        yield* waitHttp(port, "15 seconds")
        // The primary, its N workers and its watchdog.
        yield* eventually(() => pidsWithTag(primary.tag).length === N + 2 || undefined, "5 seconds")
        process.kill(-primary.pid, "SIGINT")
        const exit = yield* awaitExit(primary, "8 seconds")
        assert.deepStrictEqual(exit, { code: 0, signal: null }, primary.lines.join("\n"))
        assert.isFalse(
          primary.lines.some((l) => l.includes("restarting")),
          primary.lines.join("\n")
        )
        yield* assertNoneLeft(primary.tag)
      })
    )
  )
})

describe("row 22: kill -TERM the supervisor process", () => {
  for (const mode of modes) {
    it.live(`${mode} mode: the workers stop, the primary exits 0`, () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const primary = yield* supervisorPrimary(mode, dir)
          yield* allReady(primary, dir)
          yield* waitStarted(primary, N)
          process.kill(primary.pid, "SIGTERM")
          const exit = yield* awaitExit(primary, "8 seconds")
          assert.deepStrictEqual(exit, { code: 0, signal: null }, primary.lines.join("\n"))
          assertOneTermEach(primary, dir)
          yield* assertNoneLeft(primary.tag)
        })
      )
    )
  }

  it.live("Prefork.run with runMain: the workers run their finalizers, the primary exits 0", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const dir = yield* tempDir
        const primary = yield* runPrimary(dir)
        yield* allReady(primary, dir)
        process.kill(primary.pid, "SIGTERM")
        const exit = yield* awaitExit(primary, "8 seconds")
        assert.deepStrictEqual(exit, { code: 0, signal: null }, primary.lines.join("\n"))
        assertOneTermEach(primary, dir)
        assert.strictEqual(filesStartingWith(dir, "released-").length, N)
        yield* assertNoneLeft(primary.tag)
      })
    )
  )
})
