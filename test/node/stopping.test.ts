/**
 * FAULTS.md rows 9, 11–15 and 18 with real processes: closing the
 * supervisor's scope stops every worker once, gracefully, within one stop
 * deadline, and spends no budget.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs"
import * as Path from "node:path"
import { assert, describe, it, vi } from "@effect/vitest"
import { Duration, Effect, Exit, Scope } from "effect"
import * as NodeProcessSpawner from "../../src/node/NodeProcessSpawner.ts"
import { ProcessSpawner } from "../../src/ProcessSpawner.ts"
import { TaskId } from "../../src/TaskId.ts"
import { assertNoneLeft, eventually, makeTag, pidsWithTag } from "../helpers/procs.ts"
import { captureLogs, exitedEvents, fixture, started, superviseNode, tempDir, timed } from "../helpers/supervise.ts"

/** Waits until every task of `n` has created `<dir>/ready-<task id>`. */
const allReady = (dir: string, n: number) =>
  eventually(
    () => Array.from({ length: n }, (_, i) => existsSync(Path.join(dir, `ready-${i}`))).every(Boolean) || undefined
  )

describe("stopping (real processes)", () => {
  it.live("row 9: closing the scope during a restart delay spawns nothing more and returns promptly", () =>
    Effect.gen(function* () {
      const scope = yield* Scope.make()
      const { events, tag } = yield* Scope.provide(scope)(
        superviseNode("exit.js", ["1"], { processes: 2, backoff: { initial: "3 seconds" } })
      )
      yield* eventually(() => (exitedEvents(events).length === 2 ? true : undefined))
      const startsBefore = started(events).length
      const [, ms] = yield* timed(Scope.close(scope, Exit.void))
      assert.isBelow(ms, 1000)
      yield* Effect.sleep("3500 millis")
      assert.strictEqual(started(events).length, startsBefore)
      assert.strictEqual(startsBefore, 2)
      yield* assertNoneLeft(tag)
    })
  )

  it.live("row 11: closing with 4 cooperative children sends each SIGTERM once; no restart, no budget", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const dir = yield* tempDir
        const inner = yield* Scope.make()
        const { events, handle, tag } = yield* Scope.provide(inner)(
          superviseNode("term-then.js", ["log", dir], { processes: 4, maxRestarts: 0 })
        )
        yield* allReady(dir, 4)
        yield* Scope.close(inner, Exit.void)
        const terms = readFileSync(Path.join(dir, "terms"), "utf8").trim().split("\n").sort()
        assert.deepStrictEqual(terms, ["term 0", "term 1", "term 2", "term 3"])
        assert.strictEqual(started(events).length, 4)
        assert.strictEqual(exitedEvents(events).length, 0)
        const exit = yield* Effect.exit(handle.await)
        assert.isTrue(Exit.hasInterrupts(exit))
        yield* assertNoneLeft(tag)
      })
    )
  )

  it.live("row 12: a child that ignores SIGTERM gets SIGKILL after the stop timeout", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const dir = yield* tempDir
        const logs = captureLogs()
        const inner = yield* Scope.make()
        const { tag } = yield* Scope.provide(inner)(
          superviseNode("ignore-term.js", [dir], { processes: 1, stopTimeout: "1 second" }, logs.layer)
        )
        yield* allReady(dir, 1)
        const [, ms] = yield* timed(Scope.close(inner, Exit.void))
        assert.isAtLeast(ms, 900)
        assert.isBelow(ms, 3000)
        assert.isTrue(
          logs.captured.lines.some((l) =>
            /child 0 \(pid \d+\) still running 1000 ms after SIGTERM, sending SIGKILL/.test(l)
          )
        )
        yield* assertNoneLeft(tag)
      })
    )
  )

  it.live("row 13: four children that ignore SIGTERM share one 2 s deadline (about 2 s, not 8 s)", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const dir = yield* tempDir
        const inner = yield* Scope.make()
        const { tag } = yield* Scope.provide(inner)(
          superviseNode("ignore-term.js", [dir], { processes: 4, stopTimeout: "2 seconds" })
        )
        yield* allReady(dir, 4)
        const [, ms] = yield* timed(Scope.close(inner, Exit.void))
        assert.isAtLeast(ms, 1900)
        assert.isBelow(ms, 4000)
        yield* assertNoneLeft(tag)
      })
    )
  )

  it.live("row 14: a child that cleans up for 1 s after SIGTERM, with a 3 s stop timeout, finishes; no SIGKILL", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const dir = yield* tempDir
        const logs = captureLogs()
        const inner = yield* Scope.make()
        const { tag } = yield* Scope.provide(inner)(
          superviseNode("term-then.js", ["slow", dir, "1000"], { processes: 1, stopTimeout: "3 seconds" }, logs.layer)
        )
        yield* allReady(dir, 1)
        yield* Scope.close(inner, Exit.void)
        assert.isTrue(existsSync(Path.join(dir, "done-0")))
        assert.isFalse(logs.captured.lines.some((l) => l.includes("sending SIGKILL")))
        yield* assertNoneLeft(tag)
      })
    )
  )

  for (const how of ["exit1", "die"] as const) {
    it.live(
      `row 15: a child that ${how === "exit1" ? "exits 1" : "dies of the signal"} on SIGTERM is not restarted; the result is interruption`,
      () =>
        Effect.scoped(
          Effect.gen(function* () {
            const dir = yield* tempDir
            const { events, handle, tag } = yield* superviseNode("term-then.js", [how, dir], {
              processes: 2,
              maxRestarts: 0
            })
            yield* allReady(dir, 2)
            yield* handle.stop
            const exit = yield* Effect.exit(handle.await)
            assert.isTrue(Exit.hasInterrupts(exit))
            assert.isFalse(Exit.isFailure(exit) && exit.cause.reasons.some((r) => r._tag === "Fail"))
            assert.strictEqual(started(events).length, 2)
            // Each stopped worker is told as stopped, never as an exit to restart.
            yield* eventually(() => (exitedEvents(events).length === 2 ? true : undefined))
            assert.deepStrictEqual(
              exitedEvents(events).map((e) => [e.stopped, e.restart]),
              [
                [true, false],
                [true, false]
              ]
            )
            yield* assertNoneLeft(tag)
          })
        )
    )
  }

  it.live("row 18: stopping twice, and closing after every child exited, is quiet and signals no reaped pid", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const kills = vi.spyOn(process, "kill")
        yield* Effect.addFinalizer(() => Effect.sync(() => kills.mockRestore()))
        // Twice: stop, then the scope closes too.
        const first = yield* superviseNode("forever.js", [], { processes: 2 })
        yield* eventually(() => (started(first.events).length === 2 ? true : undefined))
        yield* first.handle.stop
        yield* first.handle.stop
        yield* assertNoneLeft(first.tag)
        // Already exited: closing sends nothing to any pid of these workers.
        const inner = yield* Scope.make()
        const second = yield* Scope.provide(inner)(superviseNode("exit.js", ["0"], { processes: 2 }))
        yield* second.handle.await
        const pids = started(second.events).map((s) => s.pid)
        kills.mockClear()
        yield* Scope.close(inner, Exit.void)
        const signaled = kills.mock.calls.map(([pid]) => Math.abs(Number(pid)))
        assert.deepStrictEqual(
          signaled.filter((pid) => pids.includes(pid)),
          []
        )
        yield* assertNoneLeft(second.tag)
      })
    )
  )

  it.live("row 18: a handle's kill after the process was reaped does nothing", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const { env, tag } = makeTag()
        const spawner = yield* ProcessSpawner
        const kills = vi.spyOn(process, "kill")
        yield* Effect.addFinalizer(() => Effect.sync(() => kills.mockRestore()))
        const handle = yield* spawner.spawn({
          taskId: TaskId(0),
          mode: "command",
          command: process.execPath,
          args: [fixture("exit.js"), "3"],
          env,
          stdio: "ignore",
          readiness: "spawn",
          stopTimeout: Duration.seconds(1)
        })
        const status = yield* handle.exit
        assert.deepStrictEqual(status._tag, "Exited")
        kills.mockClear()
        yield* handle.kill("SIGTERM")
        yield* handle.kill("SIGKILL")
        assert.deepStrictEqual(kills.mock.calls, [])
        assert.deepStrictEqual(pidsWithTag(tag), [])
      }).pipe(Effect.provide(NodeProcessSpawner.layer))
    )
  )

  it.live("a missing executable is a typed SpawnFailed, with nothing left running", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const { env, tag } = makeTag()
        const spawner = yield* ProcessSpawner
        const error = yield* Effect.flip(
          spawner.spawn({
            taskId: TaskId(0),
            mode: "command",
            command: "prefork-no-such-command",
            args: [],
            env,
            stdio: "ignore",
            readiness: "spawn",
            stopTimeout: Duration.seconds(1)
          })
        )
        assert.strictEqual(error._tag, "SpawnFailed")
        assert.strictEqual(error.code, "ENOENT")
        assert.deepStrictEqual(pidsWithTag(tag), [])
      }).pipe(Effect.provide(NodeProcessSpawner.layer))
    )
  )
})

describe("the primary's event loop under a crash storm (row 32)", () => {
  it.live("8 workers crash-looping with no restart delay leave the primary's timers firing", () =>
    Effect.scoped(
      Effect.gen(function* () {
        let ticks = 0
        const timer = setInterval(() => ticks++, 10)
        yield* Effect.addFinalizer(() => Effect.sync(() => clearInterval(timer)))
        const { events, handle, tag } = yield* superviseNode("exit.js", ["1"], { processes: 8, maxRestarts: Infinity })
        const t0 = Date.now()
        yield* Effect.sleep("2 seconds")
        const elapsed = Date.now() - t0
        const restarts = exitedEvents(events).length
        yield* handle.stop
        // Loose on purpose (the suite shares 2 cores): a starved loop fires ~0 % of ticks (measured),
        // a healthy one nearly all when alone.
        assert.isAbove(ticks, (elapsed / 10) * 0.2, `${ticks} ticks of 10 ms in ${elapsed} ms, ${restarts} exits`)
        assert.isAbove(restarts, 8)
        yield* assertNoneLeft(tag)
      })
    )
  )
})

describe("a crash storm (rows 8 and 28)", () => {
  const fdCount = () => readdirSync("/proc/self/fd").length
  const zombieChildren = () =>
    readdirSync("/proc")
      .filter((e) => /^\d+$/.test(e))
      .filter((pid) => {
        try {
          const stat = readFileSync(`/proc/${pid}/stat`, "latin1")
          const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
          return fields[0] === "Z" && Number(fields[1]) === process.pid
        } catch {
          return false
        }
      })

  it.live("hundreds of crash-and-restart cycles leave no zombie and no fd behind; closing mid-storm is prompt", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const fdsBefore = fdCount()
        const inner = yield* Scope.make()
        const { events, tag } = yield* Scope.provide(inner)(
          superviseNode("exit.js", ["1"], { processes: 4, maxRestarts: Infinity })
        )
        yield* eventually(() => (exitedEvents(events).length >= 150 ? true : undefined), "20 seconds")
        // Mid-storm: workers are starting and dying while the scope closes.
        const [, ms] = yield* timed(Scope.close(inner, Exit.void))
        assert.isBelow(ms, 2000)
        const startsAtClose = started(events).length
        yield* assertNoneLeft(tag)
        yield* Effect.sleep("200 millis")
        assert.strictEqual(started(events).length, startsAtClose)
        assert.deepStrictEqual(zombieChildren(), [])
        // Every pipe and IPC channel of every incarnation is closed (slack for the test runner's own).
        assert.isAtMost(fdCount(), fdsBefore + 3)
      })
    )
  )
})
