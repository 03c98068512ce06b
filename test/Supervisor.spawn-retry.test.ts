/**
 * FAULTS.md row 36, the policy: a spawn that fails for want of a resource
 * (EMFILE, ENFILE, EAGAIN, ENOMEM) is tried again after 100 ms, doubling up to
 * 5 s, spending no restart budget, while the other workers keep running; the
 * wait is interruptible. Only a spawn that can never work is `SpawnFailed`.
 * With the in-memory spawner and under `TestClock`: no real process, no real time.
 */
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Exit, Fiber, Layer, Logger, Metric, Option, Stream } from "effect"
import * as Scope from "effect/Scope"
import { TestClock } from "effect/testing"
import { isShortage, SpawnFailed } from "../src/Errors.ts"
import * as ExitStatus from "../src/ExitStatus.ts"
import * as Metrics from "../src/Metrics.ts"
import type { ProcessSpawner } from "../src/ProcessSpawner.ts"
import * as Supervisor from "../src/Supervisor.ts"
import * as TestSpawner from "../src/testing/TestSpawner.ts"

type Control = TestSpawner.TestSpawner["Service"]

interface LogLine {
  readonly level: string
  readonly message: string
}

/** Runs a test body with a fresh test spawner and a logger that records every line. */
const withSpawner = <A, E>(
  body: (spawner: Control, logs: ReadonlyArray<LogLine>) => Effect.Effect<A, E, ProcessSpawner | Scope.Scope>
): Effect.Effect<A, E, Scope.Scope> => {
  const logs: Array<LogLine> = []
  const logger = Logger.make<unknown, void>(({ logLevel, message }) => {
    const parts: ReadonlyArray<unknown> = Array.isArray(message) ? message : [message]
    logs.push({ level: logLevel, message: parts.map(String).join(" ") })
  })
  return Effect.gen(function* () {
    const spawner = yield* TestSpawner.TestSpawner
    return yield* body(spawner, logs)
  }).pipe(Effect.provide(Layer.merge(TestSpawner.layer(), Logger.layer([logger]))))
}

/** Lets every fiber that can run do so (bounded). */
const settle = Effect.gen(function* () {
  for (let i = 0; i < 25; i++) yield* Effect.yieldNow
})

const now = Effect.clockWith((clock) => Effect.succeed(clock.currentTimeMillisUnsafe()))

const base = { command: "worker", stopTimeout: "5 seconds" } as const

type Retrying = Extract<Supervisor.Event, { readonly _tag: "SpawnRetrying" }>

/** Starts a supervisor in the current scope, its events collected. */
const startCollecting = (options: Supervisor.Options) =>
  Effect.gen(function* () {
    const handle = yield* Supervisor.start(options)
    const events: Array<Supervisor.Event> = []
    yield* handle.events.pipe(
      Stream.runForEach((event) => Effect.sync(() => events.push(event))),
      Effect.forkScoped
    )
    yield* Effect.yieldNow
    const retries = () => events.filter((e): e is Retrying => e._tag === "SpawnRetrying")
    return { handle, events, retries }
  })

const retriesOf = (code: string) =>
  Effect.map(Metric.value(Metric.withAttributes(Metrics.spawnRetries, { code })), (state) => state.count)

describe("spawn retries after a shortage (row 36)", () => {
  it("the shortage codes are transient; what can never work is not", () => {
    for (const code of ["EMFILE", "ENFILE", "EAGAIN", "ENOMEM"]) {
      assert.isTrue(isShortage(code), code)
      assert.isTrue(new SpawnFailed({ taskId: 0, command: "x", code, message: "m" }).transient, code)
    }
    for (const code of ["ENOENT", "EACCES", "E2BIG", "ENOEXEC", undefined]) {
      assert.isFalse(isShortage(code), String(code))
      assert.isFalse(
        new SpawnFailed({ taskId: 0, command: "x", message: "m", ...(code === undefined ? {} : { code }) }).transient
      )
    }
  })

  it.effect("a first start is retried after 100, 200, 400 … ms up to 5 s, told each time, spending no budget", () =>
    withSpawner((spawner, logs) =>
      Effect.scoped(
        Effect.gen(function* () {
          const counted = yield* retriesOf("EMFILE")
          yield* spawner.failNextSpawns(8, { code: "EMFILE", message: "the primary has too many open files" })
          // No budget at all: a single restart that spent any would end the run.
          const { handle, retries } = yield* startCollecting({ ...base, processes: 1, maxRestarts: 0 })
          yield* settle
          const expected = [100, 200, 400, 800, 1600, 3200, 5000, 5000]
          let at = 0
          for (let i = 0; i < expected.length; i++) {
            assert.strictEqual(retries().length, i + 1)
            assert.strictEqual((yield* spawner.spawnFailures).length, i + 1)
            // One millisecond short of the delay: nothing is tried.
            yield* TestClock.adjust(expected[i]! - 1)
            yield* settle
            assert.strictEqual((yield* spawner.spawnFailures).length, i + 1)
            yield* TestClock.adjust(1)
            yield* settle
            at += expected[i]!
          }
          const [worker] = yield* spawner.awaitSpawns(1)
          assert.strictEqual(worker!.spawnedAt, at)
          assert.deepStrictEqual(
            retries().map((e) => [e.taskId, e.code, e.attempt, Duration.toMillis(e.delay)]),
            expected.map((d, i) => [0, "EMFILE", i + 1, d])
          )
          assert.strictEqual(yield* retriesOf("EMFILE"), counted + 8)
          const warnings = logs.filter((l) => l.level === "Warn" && /retrying in/.test(l.message))
          assert.strictEqual(warnings.length, 8)
          assert.include(warnings[0]!.message, "the primary has too many open files; retrying in 100ms (attempt 1)")
          assert.include(warnings[7]!.message, "retrying in 5s (attempt 8)")
          const [slot] = yield* handle.status
          assert.strictEqual(slot!.restarts, 0)
          yield* spawner.exit(worker!.pid, ExitStatus.exited(0))
          const summary = yield* handle.await
          assert.strictEqual(summary.restarts, 0)
        })
      )
    )
  )

  it.effect("a restart short of processes is retried; the healthy siblings are never touched", () =>
    withSpawner((spawner) =>
      Effect.scoped(
        Effect.gen(function* () {
          const { handle, retries } = yield* startCollecting({ ...base, processes: 3, maxRestarts: 1 })
          yield* spawner.awaitSpawns(3)
          yield* spawner.failNextSpawns(3, { code: "EAGAIN" })
          yield* spawner.exit(1001, ExitStatus.exited(1))
          yield* settle
          assert.deepStrictEqual(
            retries().map((e) => [e.taskId, e.code, e.attempt]),
            [[1, "EAGAIN", 1]]
          )
          yield* TestClock.adjust(100 + 200 + 400)
          const spawned = yield* spawner.awaitSpawns(4)
          assert.strictEqual(spawned[3]!.taskId, 1)
          assert.strictEqual(retries().length, 3)
          // The crash spent one restart (the whole budget); the three retries spent none.
          const status = yield* handle.status
          assert.deepStrictEqual(
            status.map((s) => [s.taskId, s.restarts, s.state]),
            [
              [0, 0, "running"],
              [1, 1, "running"],
              [2, 0, "running"]
            ]
          )
          for (const pid of [1000, 1002]) {
            const p = yield* spawner.process(pid)
            assert.deepStrictEqual([p.signals, p.exitStatus], [[], Option.none()])
          }
        })
      )
    )
  )

  it.effect("closing the supervisor during a retry wait returns at once and spawns nothing more", () =>
    withSpawner((spawner) =>
      Effect.gen(function* () {
        const scope = yield* Scope.make()
        const { retries } = yield* Scope.provide(scope)(startCollecting({ ...base, processes: 2 }))
        yield* spawner.awaitSpawns(2)
        yield* spawner.failNextSpawns(1000, { code: "ENFILE" })
        yield* spawner.exit(1000, ExitStatus.exited(1))
        yield* settle
        yield* TestClock.adjust(100 + 200)
        yield* settle
        assert.strictEqual(retries().length, 3)
        const failed = (yield* spawner.spawnFailures).length
        // No clock advance: the close does not wait for the 400 ms delay.
        const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void))
        yield* settle
        assert.isDefined(closing.pollUnsafe())
        yield* TestClock.adjust("1 minute")
        yield* settle
        assert.strictEqual((yield* spawner.spawnFailures).length, failed)
        assert.strictEqual((yield* spawner.processes).length, 2)
        assert.deepStrictEqual(yield* spawner.live, [])
        yield* Fiber.join(closing)
      })
    )
  )

  it.effect("a spawn that can never work (ENOENT) still ends the supervision with SpawnFailed, never retried", () =>
    withSpawner((spawner) =>
      Effect.gen(function* () {
        const fiber = yield* Effect.forkChild(Supervisor.run({ ...base, processes: 2 }))
        yield* spawner.awaitSpawns(2)
        yield* spawner.failNextSpawns(1, { code: "EACCES" })
        yield* spawner.exit(1000, ExitStatus.exited(1))
        const error = yield* Effect.flip(Fiber.join(fiber))
        assert.strictEqual(error._tag, "SpawnFailed")
        if (error._tag !== "SpawnFailed") return
        assert.strictEqual(error.code, "EACCES")
        assert.isFalse(error.transient)
        assert.deepStrictEqual(yield* spawner.live, [])
      })
    )
  )

  it.effect("a reload's replacement short of files fails the reload (not retried); the old worker serves on", () =>
    withSpawner((spawner) =>
      Effect.scoped(
        Effect.gen(function* () {
          const { handle, retries } = yield* startCollecting({ ...base, processes: 1 })
          yield* spawner.awaitSpawns(1)
          yield* spawner.failNextSpawns(1, { code: "EMFILE", message: "too many open files" })
          const error = yield* Effect.flip(handle.reload())
          assert.strictEqual(error._tag, "ReloadFailed")
          if (error._tag !== "ReloadFailed") return
          assert.include(error.message, "too many open files")
          assert.strictEqual(retries().length, 0)
          const old = yield* spawner.process(1000)
          assert.deepStrictEqual([old.signals, old.exitStatus], [[], Option.none()])
          // Once files are available again, the next reload works.
          yield* handle.reload()
          assert.deepStrictEqual(
            (yield* spawner.live).map((p) => p.pid),
            [1001]
          )
        })
      )
    )
  )

  it.effect("a warm spare short of memory is retried and told without a task id", () =>
    withSpawner((spawner, logs) =>
      Effect.scoped(
        Effect.gen(function* () {
          const { retries } = yield* startCollecting({ ...base, mode: "module", processes: 1, spares: 1 })
          yield* spawner.awaitSpawns(2)
          yield* settle
          yield* spawner.failNextSpawns(2, { code: "ENOMEM" })
          // The slot's worker crashes: the spare takes its place, and a new spare is booted.
          const first = (yield* spawner.live).find((p) => !p.spare)!
          yield* spawner.exit(first.pid, ExitStatus.exited(1))
          yield* settle
          yield* TestClock.adjust(100 + 200)
          const spawned = yield* spawner.awaitSpawns(3)
          assert.isTrue(spawned[2]!.spare)
          assert.deepStrictEqual(
            retries().map((e) => [e.taskId, e.spare, e.code, e.attempt]),
            [
              [undefined, true, "ENOMEM", 1],
              [undefined, true, "ENOMEM", 2]
            ]
          )
          assert.isFalse(logs.some((l) => l.message.includes("cannot start a spare")))
        })
      )
    )
  )

  it.effect("a spare's retry wait ends with the supervisor, without a warning", () =>
    withSpawner((spawner, logs) =>
      Effect.gen(function* () {
        const scope = yield* Scope.make()
        const { retries } = yield* Scope.provide(scope)(
          startCollecting({ ...base, mode: "module", processes: 1, spares: 1 })
        )
        yield* spawner.awaitSpawns(2)
        yield* settle
        yield* spawner.failNextSpawns(1000, { code: "EMFILE" })
        const first = (yield* spawner.live).find((p) => !p.spare)!
        yield* spawner.exit(first.pid, ExitStatus.exited(1))
        yield* settle
        assert.deepStrictEqual(
          retries().map((e) => [e.spare, e.attempt]),
          [[true, 1]]
        )
        const start = yield* now
        yield* Scope.close(scope, Exit.void)
        assert.strictEqual(yield* now, start)
        assert.deepStrictEqual(yield* spawner.live, [])
        assert.isFalse(logs.some((l) => l.message.includes("cannot start a spare")))
      })
    )
  )
})
