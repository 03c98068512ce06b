import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Exit, Fiber, Option } from "effect"
import * as Scope from "effect/Scope"
import { TestClock } from "effect/testing"
import * as ExitStatus from "../../src/ExitStatus.ts"
import { ProcessSpawner, type SpawnRequest } from "../../src/ProcessSpawner.ts"
import { TaskId } from "../../src/TaskId.ts"
import * as TestSpawner from "../../src/testing/TestSpawner.ts"

const request = (
  taskId: number,
  stopTimeout: Duration.Input = "5 seconds",
  extra: Partial<SpawnRequest> = {}
): SpawnRequest => ({
  taskId: TaskId(taskId),
  mode: "command",
  command: "worker",
  args: ["--flag"],
  env: { PREFORK_TASK_ID: String(taskId) },
  stdio: "ignore",
  readiness: "spawn",
  stopTimeout: Duration.fromInputUnsafe(stopTimeout),
  ...extra
})

/** Spawns into a scope of its own, which the test closes when it wants. */
const spawnIn = (req: SpawnRequest) =>
  Effect.gen(function* () {
    const spawner = yield* ProcessSpawner
    const scope = yield* Scope.make()
    const handle = yield* Scope.provide(spawner.spawn(req), scope)
    return { handle, scope }
  })

const provide = <A, E, R>(self: Effect.Effect<A, E, R>, options?: TestSpawner.Options) =>
  Effect.provide(self, TestSpawner.layer(options))

describe("TestSpawner", () => {
  it.effect("gives deterministic pids from 1000 and records each spawn", () =>
    provide(
      Effect.gen(function* () {
        const control = yield* TestSpawner.TestSpawner
        yield* TestClock.adjust("3 seconds")
        const a = yield* spawnIn(request(0))
        yield* TestClock.adjust("1 second")
        const b = yield* spawnIn(request(1))
        assert.strictEqual(a.handle.pid, 1000)
        assert.strictEqual(b.handle.pid, 1001)
        assert.strictEqual(a.handle.taskId, 0)
        assert.strictEqual(b.handle.taskId, 1)
        const all = yield* control.processes
        assert.deepStrictEqual(
          all.map((p) => [p.pid, p.taskId, p.index, p.spawnedAt]),
          [
            [1000, 0, 0, 3000],
            [1001, 1, 1, 4000]
          ]
        )
        assert.deepStrictEqual(all[1]!.request.args, ["--flag"])
        assert.strictEqual(all[1]!.request.env["PREFORK_TASK_ID"], "1")
        assert.isTrue(Option.isNone(all[0]!.exitStatus))
        assert.isTrue(Option.isNone(all[0]!.exitedAt))
        assert.deepStrictEqual(all[0]!.signals, [])
      })
    )
  )

  it.effect("firstPid option", () =>
    provide(
      Effect.gen(function* () {
        const { handle } = yield* spawnIn(request(0))
        assert.strictEqual(handle.pid, 42)
      }),
      { firstPid: 42 }
    )
  )

  it.effect("each build of the layer starts from an empty table", () =>
    Effect.gen(function* () {
      const first = yield* provide(Effect.map(spawnIn(request(0)), ({ handle }) => handle.pid))
      const second = yield* provide(Effect.map(spawnIn(request(0)), ({ handle }) => handle.pid))
      assert.strictEqual(first, 1000)
      assert.strictEqual(second, 1000)
    })
  )

  it.effect("exit ends a process with any status, once", () =>
    provide(
      Effect.gen(function* () {
        const control = yield* TestSpawner.TestSpawner
        const { handle } = yield* spawnIn(request(0))
        const waiting = yield* Effect.forkChild(handle.exit)
        yield* TestClock.adjust("250 millis")
        assert.isTrue(Option.isNone(yield* handle.exitStatus))
        yield* control.exit(handle.pid, ExitStatus.signaled("SIGSEGV"))
        yield* control.exit(handle.pid, ExitStatus.exited(3))
        assert.deepStrictEqual(yield* Fiber.join(waiting), ExitStatus.signaled("SIGSEGV"))
        assert.deepStrictEqual(yield* handle.exitStatus, Option.some(ExitStatus.signaled("SIGSEGV")))
        const p = yield* control.process(handle.pid)
        assert.deepStrictEqual(p.exitStatus, Option.some(ExitStatus.signaled("SIGSEGV")))
        assert.deepStrictEqual(p.exitedAt, Option.some(250))
        assert.deepStrictEqual(yield* control.live, [])
      })
    )
  )

  it.effect("live lists only the processes that have not exited", () =>
    provide(
      Effect.gen(function* () {
        const control = yield* TestSpawner.TestSpawner
        yield* spawnIn(request(0))
        yield* spawnIn(request(1))
        yield* spawnIn(request(2))
        yield* control.exit(1001, ExitStatus.exited(0))
        assert.deepStrictEqual(
          (yield* control.live).map((p) => p.pid),
          [1000, 1002]
        )
        assert.strictEqual((yield* control.processes).length, 3)
      })
    )
  )

  it.effect("exit, process, awaitExit and onSignal die on an unknown pid", () =>
    provide(
      Effect.gen(function* () {
        const control = yield* TestSpawner.TestSpawner
        for (const effect of [
          control.exit(7, ExitStatus.exited(0)),
          Effect.asVoid(control.process(7)),
          Effect.asVoid(control.awaitExit(7)),
          control.onSignal(7, "SIGTERM", "ignore")
        ]) {
          const exit = yield* Effect.exit(effect)
          assert.isTrue(Exit.isFailure(exit) && Exit.hasDies(exit))
        }
      })
    )
  )

  describe("signals", () => {
    it.effect("SIGTERM and SIGINT terminate by default, recorded with their time", () =>
      provide(
        Effect.gen(function* () {
          const control = yield* TestSpawner.TestSpawner
          const a = yield* spawnIn(request(0))
          const b = yield* spawnIn(request(1))
          yield* TestClock.adjust("10 millis")
          yield* a.handle.kill("SIGTERM")
          yield* b.handle.kill("SIGINT")
          assert.deepStrictEqual(yield* a.handle.exit, ExitStatus.signaled("SIGTERM"))
          assert.deepStrictEqual(yield* b.handle.exit, ExitStatus.signaled("SIGINT"))
          const [pa, pb] = yield* control.processes
          assert.deepStrictEqual(pa!.signals, [{ signal: "SIGTERM", at: 10 }])
          assert.deepStrictEqual(pb!.signals, [{ signal: "SIGINT", at: 10 }])
          assert.deepStrictEqual(pa!.exitedAt, Option.some(10))
        })
      )
    )

    it.effect("other signals are recorded and ignored unless configured", () =>
      provide(
        Effect.gen(function* () {
          const control = yield* TestSpawner.TestSpawner
          const { handle } = yield* spawnIn(request(0))
          yield* handle.kill("SIGHUP")
          yield* handle.kill("SIGUSR2")
          assert.isTrue(Option.isNone(yield* handle.exitStatus))
          assert.deepStrictEqual(
            (yield* control.process(handle.pid)).signals.map((s) => s.signal),
            ["SIGHUP", "SIGUSR2"]
          )
          yield* control.onSignal(handle.pid, "SIGHUP", "terminate")
          yield* handle.kill("SIGHUP")
          assert.deepStrictEqual(yield* handle.exitStatus, Option.some(ExitStatus.signaled("SIGHUP")))
        })
      )
    )

    it.effect("SIGKILL always ends the process, even one that ignores SIGTERM", () =>
      provide(
        Effect.gen(function* () {
          const { handle } = yield* spawnIn(request(0))
          yield* handle.kill("SIGTERM")
          assert.isTrue(Option.isNone(yield* handle.exitStatus))
          yield* handle.kill("SIGKILL")
          assert.deepStrictEqual(yield* handle.exitStatus, Option.some(ExitStatus.signaled("SIGKILL")))
        }),
        { signals: { SIGTERM: "ignore" } }
      )
    )

    it.effect("a delayed exit on SIGTERM happens exactly after the delay on Clock", () =>
      provide(
        Effect.gen(function* () {
          const control = yield* TestSpawner.TestSpawner
          const { handle } = yield* spawnIn(request(0))
          yield* TestClock.adjust("1 second")
          yield* handle.kill("SIGTERM")
          yield* TestClock.adjust("1999 millis")
          assert.isTrue(Option.isNone(yield* handle.exitStatus))
          // A second SIGTERM while the exit is pending does not postpone it.
          yield* handle.kill("SIGTERM")
          yield* TestClock.adjust("1 milli")
          assert.deepStrictEqual(yield* handle.exitStatus, Option.some(ExitStatus.exited(1)))
          const p = yield* control.process(handle.pid)
          assert.deepStrictEqual(p.exitedAt, Option.some(3000))
          assert.deepStrictEqual(p.signals, [
            { signal: "SIGTERM", at: 1000 },
            { signal: "SIGTERM", at: 2999 }
          ])
        }),
        { signals: { SIGTERM: { exit: ExitStatus.exited(1), after: "2 seconds" } } }
      )
    )

    it.effect("SIGKILL cuts a pending delayed exit short", () =>
      provide(
        Effect.gen(function* () {
          const control = yield* TestSpawner.TestSpawner
          const { handle } = yield* spawnIn(request(0))
          yield* control.onSignal(handle.pid, "SIGTERM", { exit: ExitStatus.exited(0), after: "5 seconds" })
          yield* handle.kill("SIGTERM")
          yield* TestClock.adjust("1 second")
          yield* handle.kill("SIGKILL")
          yield* TestClock.adjust("10 seconds")
          assert.deepStrictEqual(yield* handle.exitStatus, Option.some(ExitStatus.signaled("SIGKILL")))
          assert.deepStrictEqual((yield* control.process(handle.pid)).exitedAt, Option.some(1000))
        })
      )
    )

    it.effect("per-process settings win over defaults; setSignalDefault reaches live processes", () =>
      provide(
        Effect.gen(function* () {
          const control = yield* TestSpawner.TestSpawner
          const a = yield* spawnIn(request(0))
          const b = yield* spawnIn(request(1))
          yield* control.onSignal(a.handle.pid, "SIGTERM", "terminate")
          yield* control.setSignalDefault("SIGTERM", { exit: ExitStatus.exited(0) })
          yield* a.handle.kill("SIGTERM")
          yield* b.handle.kill("SIGTERM")
          assert.deepStrictEqual(yield* a.handle.exitStatus, Option.some(ExitStatus.signaled("SIGTERM")))
          assert.deepStrictEqual(yield* b.handle.exitStatus, Option.some(ExitStatus.exited(0)))
        })
      )
    )

    it.effect("kill on an exited process does nothing and is only listed as an attempt", () =>
      provide(
        Effect.gen(function* () {
          const control = yield* TestSpawner.TestSpawner
          const { handle } = yield* spawnIn(request(0))
          yield* control.exit(handle.pid, ExitStatus.exited(2))
          yield* TestClock.adjust("5 millis")
          yield* handle.kill("SIGTERM")
          yield* handle.kill("SIGKILL")
          const p = yield* control.process(handle.pid)
          assert.deepStrictEqual(p.signals, [])
          assert.deepStrictEqual(p.exitStatus, Option.some(ExitStatus.exited(2)))
          assert.deepStrictEqual(p.exitedAt, Option.some(0))
          assert.deepStrictEqual(yield* control.kills, [
            { pid: 1000, signal: "SIGTERM", at: 5, delivered: false },
            { pid: 1000, signal: "SIGKILL", at: 5, delivered: false }
          ])
        })
      )
    )
  })

  describe("scope", () => {
    it.effect("closing the scope sends SIGTERM and waits for the exit", () =>
      provide(
        Effect.gen(function* () {
          const control = yield* TestSpawner.TestSpawner
          const { handle, scope } = yield* spawnIn(request(0))
          yield* Scope.close(scope, Exit.void)
          const p = yield* control.process(handle.pid)
          assert.deepStrictEqual(p.exitStatus, Option.some(ExitStatus.signaled("SIGTERM")))
          assert.deepStrictEqual(
            p.signals.map((s) => s.signal),
            ["SIGTERM"]
          )
        })
      )
    )

    it.effect("a process that ignores SIGTERM gets SIGKILL exactly at the stop timeout", () =>
      provide(
        Effect.gen(function* () {
          const control = yield* TestSpawner.TestSpawner
          const { handle, scope } = yield* spawnIn(request(0, "3 seconds"))
          const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void))
          yield* TestClock.adjust("2999 millis")
          assert.isTrue(Option.isNone(yield* handle.exitStatus))
          assert.isUndefined(closing.pollUnsafe())
          yield* TestClock.adjust("1 milli")
          yield* Fiber.join(closing)
          const p = yield* control.process(handle.pid)
          assert.deepStrictEqual(p.signals, [
            { signal: "SIGTERM", at: 0 },
            { signal: "SIGKILL", at: 3000 }
          ])
          assert.deepStrictEqual(p.exitStatus, Option.some(ExitStatus.signaled("SIGKILL")))
        }),
        { signals: { SIGTERM: "ignore" } }
      )
    )

    it.effect("closing the scope of an exited process signals nothing", () =>
      provide(
        Effect.gen(function* () {
          const control = yield* TestSpawner.TestSpawner
          const { handle, scope } = yield* spawnIn(request(0))
          yield* control.exit(handle.pid, ExitStatus.exited(0))
          yield* Scope.close(scope, Exit.void)
          assert.deepStrictEqual(yield* control.kills, [])
        })
      )
    )
  })

  describe("awaitSpawns", () => {
    it.effect("waits, under TestClock, until enough processes were spawned", () =>
      provide(
        Effect.gen(function* () {
          const control = yield* TestSpawner.TestSpawner
          const waiting = yield* Effect.forkChild(control.awaitSpawns(2))
          yield* Effect.forkChild(
            Effect.gen(function* () {
              yield* Effect.sleep("1 second")
              yield* spawnIn(request(0))
              yield* Effect.sleep("1 second")
              yield* spawnIn(request(1))
              yield* spawnIn(request(2))
            })
          )
          yield* TestClock.adjust("1 second")
          assert.isUndefined(waiting.pollUnsafe())
          yield* TestClock.adjust("1 second")
          const spawned = yield* Fiber.join(waiting)
          assert.deepStrictEqual(
            spawned.map((p) => [p.pid, p.spawnedAt]),
            [
              [1000, 1000],
              [1001, 2000]
            ]
          )
        })
      )
    )

    it.effect("returns at once when enough were already spawned", () =>
      provide(
        Effect.gen(function* () {
          const control = yield* TestSpawner.TestSpawner
          yield* spawnIn(request(0))
          yield* spawnIn(request(1))
          assert.deepStrictEqual(
            (yield* control.awaitSpawns(1)).map((p) => p.pid),
            [1000]
          )
          assert.deepStrictEqual(yield* control.awaitSpawns(0), [])
        })
      )
    )
  })

  it.effect("awaitExit waits for the exit", () =>
    provide(
      Effect.gen(function* () {
        const control = yield* TestSpawner.TestSpawner
        const { handle } = yield* spawnIn(request(0))
        const waiting = yield* Effect.forkChild(control.awaitExit(handle.pid))
        yield* TestClock.adjust("1 second")
        assert.isUndefined(waiting.pollUnsafe())
        yield* control.exit(handle.pid, ExitStatus.exited(9))
        const p = yield* Fiber.join(waiting)
        assert.deepStrictEqual(p.exitStatus, Option.some(ExitStatus.exited(9)))
        assert.deepStrictEqual(p.exitedAt, Option.some(1000))
      })
    )
  )

  it.effect("failNextSpawns fails exactly the next spawns, with SpawnFailed, without using a pid", () =>
    provide(
      Effect.gen(function* () {
        const control = yield* TestSpawner.TestSpawner
        yield* control.failNextSpawns(2)
        yield* control.failNextSpawns(1, { code: "EAGAIN", message: "try again" })
        const first = yield* Effect.flip(spawnIn(request(3)))
        assert.strictEqual(first._tag, "SpawnFailed")
        assert.strictEqual(first.code, "ENOENT")
        assert.strictEqual(first.taskId, 3)
        assert.strictEqual(first.command, "worker")
        assert.strictEqual(first.message, "spawn worker ENOENT")
        yield* Effect.flip(spawnIn(request(3)))
        const third = yield* Effect.flip(spawnIn(request(3)))
        assert.strictEqual(third.code, "EAGAIN")
        assert.strictEqual(third.message, "try again")
        const { handle } = yield* spawnIn(request(3))
        assert.strictEqual(handle.pid, 1000)
        assert.strictEqual((yield* control.spawnFailures).length, 3)
        assert.strictEqual((yield* control.processes).length, 1)
      })
    )
  )

  it.effect("the script option makes processes exit by themselves, on Clock", () =>
    provide(
      Effect.gen(function* () {
        const control = yield* TestSpawner.TestSpawner
        const a = yield* spawnIn(request(0))
        const b = yield* spawnIn(request(1))
        yield* TestClock.adjust("499 millis")
        assert.isTrue(Option.isNone(yield* a.handle.exitStatus))
        yield* TestClock.adjust("1 milli")
        assert.deepStrictEqual(yield* a.handle.exitStatus, Option.some(ExitStatus.exited(7)))
        assert.isTrue(Option.isNone(yield* b.handle.exitStatus))
        assert.deepStrictEqual((yield* control.process(a.handle.pid)).exitedAt, Option.some(500))
      }),
      {
        script: (p) => (p.index === 0 ? { status: ExitStatus.exited(7), after: "500 millis" } : undefined)
      }
    )
  )

  describe("readiness", () => {
    it.effect('readiness "spawn": ready at once', () =>
      provide(
        Effect.gen(function* () {
          const control = yield* TestSpawner.TestSpawner
          yield* TestClock.adjust("2 seconds")
          const { handle } = yield* spawnIn(request(0))
          yield* handle.ready
          assert.deepStrictEqual((yield* control.process(handle.pid)).readyAt, Option.some(2000))
        })
      )
    )

    it.effect('readiness "message": ready when the test says so, once', () =>
      provide(
        Effect.gen(function* () {
          const control = yield* TestSpawner.TestSpawner
          const { handle } = yield* spawnIn(request(0, "5 seconds", { mode: "module", readiness: "message" }))
          const waiting = yield* Effect.forkChild(handle.ready)
          yield* TestClock.adjust("1 second")
          assert.isUndefined(waiting.pollUnsafe())
          assert.isTrue(Option.isNone((yield* control.process(handle.pid)).readyAt))
          yield* control.ready(handle.pid)
          yield* Fiber.join(waiting)
          yield* TestClock.adjust("1 second")
          yield* control.ready(handle.pid)
          assert.deepStrictEqual((yield* control.process(handle.pid)).readyAt, Option.some(1000))
        })
      )
    )

    it.effect("a process that exits first is never ready", () =>
      provide(
        Effect.gen(function* () {
          const control = yield* TestSpawner.TestSpawner
          const { handle } = yield* spawnIn(request(0, "5 seconds", { mode: "module", readiness: "message" }))
          const waiting = yield* Effect.forkChild(handle.ready)
          yield* control.exit(handle.pid, ExitStatus.exited(1))
          yield* control.ready(handle.pid)
          yield* TestClock.adjust("1 hour")
          assert.isUndefined(waiting.pollUnsafe())
          assert.isTrue(Option.isNone((yield* control.process(handle.pid)).readyAt))
          yield* Fiber.interrupt(waiting)
        })
      )
    )

    it.effect("readyAfter: ready by itself after the delay on Clock", () =>
      provide(
        Effect.gen(function* () {
          const control = yield* TestSpawner.TestSpawner
          const { handle } = yield* spawnIn(request(0, "5 seconds", { mode: "cluster", readiness: "listening" }))
          yield* TestClock.adjust("749 millis")
          assert.isTrue(Option.isNone((yield* control.process(handle.pid)).readyAt))
          yield* TestClock.adjust("1 milli")
          yield* handle.ready
          assert.deepStrictEqual((yield* control.process(handle.pid)).readyAt, Option.some(750))
        }),
        { readyAfter: "750 millis" }
      )
    )
  })

  it.effect('output reaches onOutput only with stdio "pipe"', () =>
    provide(
      Effect.gen(function* () {
        const control = yield* TestSpawner.TestSpawner
        const lines: Array<string> = []
        const onOutput = (l: {
          readonly pid: number
          readonly taskId: number
          readonly stream: string
          readonly line: string
        }) => {
          lines.push(`${l.pid} ${l.taskId} ${l.stream} ${l.line}`)
        }
        const piped = yield* spawnIn(request(2, "5 seconds", { stdio: "pipe", onOutput }))
        const ignored = yield* spawnIn(request(3, "5 seconds", { stdio: "ignore", onOutput }))
        yield* control.output(piped.handle.pid, "hello")
        yield* control.output(piped.handle.pid, "oops", "stderr")
        yield* control.output(ignored.handle.pid, "lost")
        assert.deepStrictEqual(lines, ["1000 2 stdout hello", "1000 2 stderr oops"])
      })
    )
  )
})
