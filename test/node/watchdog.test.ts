/**
 * FAULTS.md row 35 with real processes: the watchdog, a small `sh` the
 * spawner layer starts, SIGKILLs what is left of the workers when their
 * primary dies, even by SIGKILL: on the path without `setpriv` (as on macOS)
 * every worker, in every mode; on the default path (with `setpriv`) the rest
 * of each worker's process group and the cluster workers. Cluster workers are
 * first given 1.5 s to notice the lost primary, so one stuck in a CPU loop
 * dies at about that time.
 *
 * And there is one watchdog per layer, hence per supervisor: started with
 * it, gone when it ends, however many supervisors come and go.
 */
import { readdirSync, readFileSync, writeFileSync } from "node:fs"
import * as Path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Layer, Option } from "effect"
import * as NodeProcessSpawner from "../../src/node/NodeProcessSpawner.ts"
import * as Prefork from "../../src/node/Prefork.ts"
import type { Mode } from "../../src/ProcessSpawner.ts"
import * as Supervisor from "../../src/Supervisor.ts"
import { awaitExit, filesStartingWith, type Primary, spawnPrimary } from "../helpers/primary.ts"
import { assertNoneLeft, eventually, makeTag, pidsWithTag } from "../helpers/procs.ts"
import { fixture, quiet, tempDir } from "../helpers/supervise.ts"

const N = 2
const WATCHDOG_ONLY = { parentDeathSignal: false, watchdog: true }

/** The watchdogs that `parent` started: its children whose command line names the watchdog. */
const watchdogsOf = (parent: number): Array<number> => {
  const found: Array<number> = []
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "latin1")
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
      if (Number(fields[1]) !== parent || fields[0] === "Z") continue
      if (readFileSync(`/proc/${entry}/cmdline`, "latin1").includes("prefork-watchdog")) found.push(Number(entry))
    } catch {
      // gone meanwhile
    }
  }
  return found
}

/** `primary.ts` supervising N workers of `script` (a fixture taking `dir` as its first argument) in `mode`. */
const primaryOf = (mode: Mode, script: string, args: ReadonlyArray<string>, spawner: NodeProcessSpawner.Options) =>
  spawnPrimary(
    "primary.ts",
    [
      JSON.stringify({
        mode,
        processes: N,
        command: mode === "command" ? process.execPath : fixture(script),
        args: mode === "command" ? [fixture(script), ...args] : args,
        stdio: "ignore",
        ready: "spawn",
        stopTimeout: "3 seconds",
        maxRestarts: 5
      })
    ],
    { env: { PREFORK_TEST_SPAWNER: JSON.stringify(spawner) } }
  )

/** Waits until every worker of the primary has created `ready-<task id>` (or `children-<task id>`). */
const allReady = (primary: Primary, dir: string, prefix: string) =>
  eventually(() => {
    if (primary.exited() !== undefined) throw new Error(`the primary exited early:\n${primary.lines.join("\n")}`)
    return filesStartingWith(dir, prefix).length === N || undefined
  }, "15 seconds")

/** SIGKILLs the primary and returns how long it took until no process of its tag was left. */
const killPrimary = (primary: Primary) =>
  Effect.gen(function* () {
    const t0 = Date.now()
    process.kill(primary.pid, "SIGKILL")
    yield* assertNoneLeft(primary.tag, "4 seconds")
    return Date.now() - t0
  })

describe("row 35: kill -9 of the primary, workers stuck in a CPU loop (they ignore SIGTERM and their channel)", () => {
  for (const [path, spawner] of [
    ["watchdog instead of setpriv", WATCHDOG_ONLY],
    ["default (setpriv and the watchdog)", {}]
  ] as const) {
    for (const mode of ["command", "module", "cluster"] as const) {
      it.live(`${path}, ${mode} mode: every worker and the watchdog are gone within about 2 s`, () =>
        Effect.scoped(
          Effect.gen(function* () {
            const dir = yield* tempDir
            const primary = yield* primaryOf(mode, "spin.js", [dir], spawner)
            yield* allReady(primary, dir, "ready-")
            // The primary, its N workers and one watchdog.
            yield* eventually(() => pidsWithTag(primary.tag).length === N + 2 || undefined, "3 seconds")
            assert.strictEqual(watchdogsOf(primary.pid).length, 1)
            const ms = yield* killPrimary(primary)
            // Command and module workers die at once; cluster workers get 1.5 s to exit by themselves first.
            assert.isBelow(ms, mode === "cluster" ? 3000 : 2000, `${ms} ms`)
          })
        )
      )
    }
  }

  for (const [path, spawner] of [
    ["watchdog instead of setpriv", WATCHDOG_ONLY],
    ["default (setpriv and the watchdog)", {}]
  ] as const) {
    it.live(`${path}: the children of a worker die with it (the watchdog kills the whole group)`, () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          // Each worker has 2 children that ignore SIGTERM, in its process group.
          const primary = yield* primaryOf("command", "family.js", [dir, "2", "term"], spawner)
          yield* allReady(primary, dir, "children-")
          yield* eventually(() => pidsWithTag(primary.tag).length === 1 + 3 * N + 1 || undefined, "3 seconds")
          const ms = yield* killPrimary(primary)
          assert.isBelow(ms, 2000, `${ms} ms`)
        })
      )
    )
  }
})

describe("row 35: a primary killed while spawning", () => {
  for (const listed of [false, true]) {
    it.live(`the watchdog kills the child it was ${listed ? "told of" : "not yet told of (found by its token)"}`, () =>
      Effect.scoped(
        Effect.gen(function* () {
          const primary = yield* spawnPrimary("watchdog-midspawn.ts", listed ? ["listed"] : [])
          const exit = yield* awaitExit(primary, "10 seconds")
          assert.strictEqual(exit.signal, "SIGKILL", primary.lines.join("\n"))
          assert.isTrue(primary.lines.some((l) => l.startsWith("SPAWNED ")))
          yield* assertNoneLeft(primary.tag, "3 seconds")
        })
      )
    )
  }
})

describe("row 35: one watchdog per supervisor, gone when it ends", () => {
  const self = process.pid
  const layerPerRun = (options: Supervisor.Options) =>
    Supervisor.run(options).pipe(Effect.provide(Layer.merge(NodeProcessSpawner.layer, quiet)))

  /**
   * Runs `effect` (whose workers run until `gate` exists), waits until this
   * process has `expected` watchdogs, then opens the gate: the result, with no
   * dependence on how fast the machine is.
   */
  const gated = <A, E>(effect: Effect.Effect<A, E>, gate: string, expected: number) =>
    Effect.gen(function* () {
      const fiber = yield* Effect.forkChild(effect)
      yield* eventually(() => (watchdogsOf(self).length === expected ? true : undefined), "10 seconds")
      writeFileSync(gate, "")
      return yield* Fiber.join(fiber)
    })

  it.live("three supervisors in a row, each providing the layer (as Prefork does): one watchdog each, none after", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      assert.deepStrictEqual(watchdogsOf(self), [])
      for (let i = 0; i < 3; i++) {
        const { env, tag } = makeTag()
        const gate = Path.join(dir, `gate-${i}`)
        const summary = yield* gated(
          layerPerRun({ processes: 2, command: process.execPath, args: [fixture("until-file.js"), gate], env }),
          gate,
          1
        )
        assert.strictEqual(summary.restarts, 0)
        // At the moment it returns: no watchdog, no worker.
        assert.deepStrictEqual(watchdogsOf(self), [])
        assert.deepStrictEqual(pidsWithTag(tag), [])
      }
    })
  )

  it.live("the watchdog shows in ps as itself and its primary's pid, not as its whole program", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const { env } = makeTag()
      const gate = Path.join(dir, "gate")
      const fiber = yield* Effect.forkChild(
        layerPerRun({ processes: 1, command: process.execPath, args: [fixture("until-file.js"), gate], env })
      )
      const [watchdog] = yield* eventually(() => {
        const found = watchdogsOf(self)
        return found.length === 1 ? found : undefined
      }, "10 seconds")
      const args = readFileSync(`/proc/${watchdog}/cmdline`, "latin1").split("\0").slice(0, -1)
      writeFileSync(gate, "")
      yield* Fiber.join(fiber)
      assert.deepStrictEqual(args, ["/bin/sh", "-c", 'eval "$PREFORK_WATCHDOG_SH"', "prefork-watchdog", String(self)])
      assert.isBelow(args.join(" ").length, 80)
    })
  )

  it.live("two supervisors at once have two watchdogs; none is left when both have ended", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const { env } = makeTag()
      const gate = Path.join(dir, "gate")
      const worker = { processes: 1, command: process.execPath, args: [fixture("until-file.js"), gate], env }
      yield* gated(Effect.all([layerPerRun(worker), layerPerRun(worker)], { concurrency: 2 }), gate, 2)
      assert.deepStrictEqual(watchdogsOf(self), [])
    })
  )

  it.live("Prefork.forkProcesses, called three times: one watchdog during each, none after", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      for (let i = 0; i < 3; i++) {
        const { env, tag } = makeTag()
        const gate = Path.join(dir, `gate-${i}`)
        const result = yield* gated(
          Prefork.forkProcesses(2, { script: fixture("until-file.js"), args: [gate], env, stdio: "ignore" }).pipe(
            Effect.provide(quiet)
          ),
          gate,
          1
        )
        assert.isTrue(Option.isNone(result))
        assert.deepStrictEqual(watchdogsOf(self), [])
        assert.deepStrictEqual(pidsWithTag(tag), [])
      }
    })
  )

  it.live("a supervisor that outlives the layer it was given keeps its watchdog until its workers are gone", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const { env, tag } = makeTag()
      yield* Effect.scoped(
        Effect.gen(function* () {
          // The layer is released as soon as `start` returns; the handle lives on in this scope.
          const handle = yield* Supervisor.start({
            processes: N,
            command: process.execPath,
            args: [fixture("spin.js"), dir],
            env,
            stdio: "ignore",
            stopTimeout: "300 millis"
          }).pipe(Effect.provide(Layer.merge(NodeProcessSpawner.layerWith(WATCHDOG_ONLY), quiet)))
          yield* eventually(() => filesStartingWith(dir, "ready-").length === N || undefined)
          // Still watched: the watchdog did not kill them when the layer was released.
          assert.strictEqual(watchdogsOf(self).length, 1)
          assert.strictEqual(pidsWithTag(tag).length, N)
          yield* handle.stop
          assert.deepStrictEqual(pidsWithTag(tag), [])
        })
      )
      // Its last worker gone, the watchdog has exited (it is not waited for here: poll, bounded).
      yield* eventually(() => watchdogsOf(self).length === 0 || undefined, "2 seconds")
    }).pipe(Effect.scoped)
  )
})
