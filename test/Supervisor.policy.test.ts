/**
 * The supervisor's policy, end to end, with the in-memory spawner and under
 * `TestClock`: no real process, no real time.
 */
import { availableParallelism } from "node:os"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Layer, Logger, Option, References, Stream } from "effect"
import * as Scope from "effect/Scope"
import { TestClock } from "effect/testing"
import type { BindFailed, InvalidOptions, SpawnFailed, TooManyRestarts } from "../src/Errors.ts"
import * as ExitStatus from "../src/ExitStatus.ts"
import { cpuCount } from "../src/internal/cpus.ts"
import type { ProcessSpawner } from "../src/ProcessSpawner.ts"
import * as Supervisor from "../src/Supervisor.ts"
import * as TestSpawner from "../src/testing/TestSpawner.ts"

// -----------------------------------------------------------------------------
// harness
// -----------------------------------------------------------------------------

interface LogLine {
  readonly level: string
  readonly message: string
  readonly annotations: Readonly<Record<string, unknown>>
}

const capture = (lines: Array<LogLine>) =>
  Logger.make<unknown, void>(({ fiber, logLevel, message }) => {
    const parts: ReadonlyArray<unknown> = Array.isArray(message) ? message : [message]
    lines.push({
      level: logLevel,
      message: parts.map(String).join(" "),
      annotations: { ...fiber.getRef(References.CurrentLogAnnotations) }
    })
  })

type Control = TestSpawner.TestSpawner["Service"]

/** Runs a test body with a fresh test spawner and a logger that records every line. */
const withSpawner = <A, E>(
  body: (spawner: Control, logs: ReadonlyArray<LogLine>) => Effect.Effect<A, E, ProcessSpawner | Scope.Scope>,
  options?: TestSpawner.Options
): Effect.Effect<A, E, Scope.Scope> => {
  const logs: Array<LogLine> = []
  return Effect.gen(function* () {
    const spawner = yield* TestSpawner.TestSpawner
    return yield* body(spawner, logs)
  }).pipe(Effect.provide(Layer.merge(TestSpawner.layer(options), Logger.layer([capture(logs)]))))
}

/** Lets every fiber that can run do so (bounded): the supervisor reacts to an exit before the test moves on. */
const settle = Effect.gen(function* () {
  for (let i = 0; i < 25; i++) yield* Effect.yieldNow
})

const now = Effect.clockWith((clock) => Effect.succeed(clock.currentTimeMillisUnsafe()))

const base = { command: "worker", stopTimeout: "5 seconds" } as const

const fork = (options: Supervisor.Options) => Effect.forkChild(Supervisor.run(options))

/** Spawns until `n` processes exist and ends the n-th one with `status`. */
const exitNth = (spawner: Control, n: number, status: ExitStatus.ExitStatus) =>
  Effect.flatMap(spawner.awaitSpawns(n), (spawned) => spawner.exit(spawned[n - 1]!.pid, status))

const tooMany = (error: TooManyRestarts | SpawnFailed | InvalidOptions | BindFailed): TooManyRestarts => {
  if (error._tag !== "TooManyRestarts") throw new Error(`expected TooManyRestarts, got ${error._tag}`)
  return error
}

const failure = <A>(fiber: Fiber.Fiber<A, TooManyRestarts | SpawnFailed | InvalidOptions | BindFailed>) =>
  Effect.map(Effect.flip(Fiber.join(fiber)), tooMany)

const code = (status: ExitStatus.ExitStatus) => (status._tag === "Exited" ? status.code : status.signal)

// -----------------------------------------------------------------------------
// tests
// -----------------------------------------------------------------------------

describe("Supervisor policy", () => {
  describe("the restart budget", () => {
    it.effect("maxRestarts: 3 allows exactly 1 + 3 starts of one slot, then TooManyRestarts", () =>
      withSpawner((spawner) =>
        Effect.gen(function* () {
          const fiber = yield* fork({ ...base, processes: 1, maxRestarts: 3 })
          for (let n = 1; n <= 4; n++) yield* exitNth(spawner, n, ExitStatus.exited(1))
          const error = yield* failure(fiber)
          assert.strictEqual(error.restarts, 3)
          assert.deepStrictEqual(
            error.exits.map((e) => [e.taskId, e.pid, code(e.status)]),
            [
              [0, 1000, 1],
              [0, 1001, 1],
              [0, 1002, 1],
              [0, 1003, 1]
            ]
          )
          yield* settle
          yield* TestClock.adjust("1 hour")
          assert.strictEqual((yield* spawner.processes).length, 4)
          assert.deepStrictEqual(yield* spawner.live, [])
        })
      )
    )

    it.effect("the budget is shared: maxRestarts: 3 over 2 slots gives 2 + 3 starts", () =>
      withSpawner((spawner) =>
        Effect.gen(function* () {
          const fiber = yield* fork({ ...base, processes: 2, maxRestarts: 3 })
          yield* spawner.awaitSpawns(2)
          yield* spawner.exit(1000, ExitStatus.exited(1)) // restart 1 (slot 0 → 1002)
          yield* exitNth(spawner, 3, ExitStatus.exited(1)) // restart 2 (slot 0 → 1003)
          yield* spawner.awaitSpawns(4)
          yield* spawner.exit(1001, ExitStatus.signaled("SIGSEGV")) // restart 3 (slot 1 → 1004)
          yield* spawner.awaitSpawns(5)
          yield* spawner.exit(1004, ExitStatus.exited(2)) // budget spent
          const error = yield* failure(fiber)
          assert.strictEqual(error.restarts, 3)
          assert.deepStrictEqual(
            error.exits.map((e) => [e.taskId, e.pid, code(e.status)]),
            [
              [0, 1000, 1],
              [0, 1002, 1],
              [1, 1001, "SIGSEGV"],
              [1, 1004, 2]
            ]
          )
          const all = yield* spawner.processes
          assert.deepStrictEqual(
            all.map((p) => [p.pid, p.taskId]),
            [
              [1000, 0],
              [1001, 1],
              [1002, 0],
              [1003, 0],
              [1004, 1]
            ]
          )
        })
      )
    )

    it.effect("maxRestarts: 0 gives up on the first abnormal exit", () =>
      withSpawner((spawner) =>
        Effect.gen(function* () {
          const fiber = yield* fork({ ...base, processes: 2, maxRestarts: 0 })
          yield* spawner.awaitSpawns(2)
          yield* spawner.exit(1001, ExitStatus.signaled("SIGKILL"))
          const error = yield* failure(fiber)
          assert.strictEqual(error.restarts, 0)
          assert.deepStrictEqual(
            error.exits.map((e) => [e.taskId, e.pid, code(e.status)]),
            [[1, 1001, "SIGKILL"]]
          )
          assert.strictEqual((yield* spawner.processes).length, 2)
          assert.deepStrictEqual(yield* spawner.live, [])
        })
      )
    )

    it.effect("the default budget is Tornado's 100 restarts", () =>
      withSpawner((spawner) =>
        Effect.gen(function* () {
          const fiber = yield* fork({ ...base, processes: 1 })
          for (let n = 1; n <= 101; n++) yield* exitNth(spawner, n, ExitStatus.exited(1))
          const error = yield* failure(fiber)
          assert.strictEqual(error.restarts, 100)
          assert.strictEqual(error.exits.length, 101)
          assert.strictEqual((yield* spawner.processes).length, 101)
        })
      )
    )

    it.effect("counts restarts exactly, per slot and in all", () =>
      withSpawner((spawner) =>
        Effect.scoped(
          Effect.gen(function* () {
            const handle = yield* Supervisor.start({ ...base, processes: 2, maxRestarts: 10 })
            yield* spawner.awaitSpawns(2)
            // slot 0 crashes 5 times, slot 1 twice
            let n = 2
            for (let i = 0; i < 5; i++) {
              const live = yield* spawner.live
              const slot0 = live.find((p) => p.taskId === 0)!
              yield* spawner.exit(slot0.pid, ExitStatus.exited(1))
              yield* spawner.awaitSpawns(++n)
            }
            for (let i = 0; i < 2; i++) {
              const slot1 = (yield* spawner.live).find((p) => p.taskId === 1)!
              yield* spawner.exit(slot1.pid, ExitStatus.signaled("SIGABRT"))
              yield* spawner.awaitSpawns(++n)
            }
            yield* settle
            const status = yield* handle.status
            assert.deepStrictEqual(
              status.map((s) => s.restarts),
              [5, 2]
            )
            for (const p of yield* spawner.live) yield* spawner.exit(p.pid, ExitStatus.exited(0))
            const summary = yield* handle.await
            assert.strictEqual(summary.restarts, 7)
            assert.strictEqual(summary.exits.length, 9)
            assert.strictEqual((yield* spawner.processes).length, 9)
          })
        )
      )
    )

    it.effect("a restarted worker keeps its task id and gets a new pid", () =>
      withSpawner((spawner) =>
        Effect.gen(function* () {
          yield* fork({ ...base, processes: 3 })
          yield* spawner.awaitSpawns(3)
          yield* spawner.exit(1001, ExitStatus.exited(1))
          const spawned = yield* spawner.awaitSpawns(4)
          const replacement = spawned[3]!
          assert.strictEqual(replacement.taskId, 1)
          assert.strictEqual(replacement.pid, 1003)
          assert.strictEqual(replacement.request.env["PREFORK_TASK_ID"], "1")
          assert.deepStrictEqual(
            spawned.slice(0, 3).map((p) => p.request.env["PREFORK_TASK_ID"]),
            ["0", "1", "2"]
          )
        })
      )
    )
  })

  describe("normal exits", () => {
    it.effect("succeeds with a Summary once every slot exited 0", () =>
      withSpawner((spawner) =>
        Effect.gen(function* () {
          const fiber = yield* fork({ ...base, processes: 3 })
          yield* spawner.awaitSpawns(3)
          yield* TestClock.adjust("2 seconds")
          yield* spawner.exit(1002, ExitStatus.exited(0))
          yield* spawner.exit(1000, ExitStatus.exited(0))
          yield* settle
          assert.isUndefined(fiber.pollUnsafe())
          yield* spawner.exit(1001, ExitStatus.exited(0))
          const summary = yield* Fiber.join(fiber)
          assert.strictEqual(summary.restarts, 0)
          assert.deepStrictEqual(
            summary.exits.map((e) => [e.taskId, e.pid, code(e.status), e.at]),
            [
              [2, 1002, 0, 2000],
              [0, 1000, 0, 2000],
              [1, 1001, 0, 2000]
            ]
          )
          assert.strictEqual((yield* spawner.processes).length, 3)
        })
      )
    )

    it.effect("an exit with code 0 is not restarted and spends no budget", () =>
      withSpawner((spawner) =>
        Effect.gen(function* () {
          // One restart allowed: if the normal exit spent it, the crash of slot 1 would give up.
          const fiber = yield* fork({ ...base, processes: 2, maxRestarts: 1 })
          yield* spawner.awaitSpawns(2)
          yield* spawner.exit(1000, ExitStatus.exited(0))
          yield* settle
          yield* spawner.exit(1001, ExitStatus.exited(1))
          const spawned = yield* spawner.awaitSpawns(3)
          assert.strictEqual(spawned[2]!.taskId, 1)
          yield* spawner.exit(1002, ExitStatus.exited(0))
          const summary = yield* Fiber.join(fiber)
          assert.strictEqual(summary.restarts, 1)
          assert.deepStrictEqual(
            summary.exits.map((e) => [e.pid, code(e.status)]),
            [
              [1000, 0],
              [1001, 1],
              [1002, 0]
            ]
          )
          assert.strictEqual((yield* spawner.processes).length, 3)
        })
      )
    )

    it.effect("normalExitCodes: listed codes are normal exits", () =>
      withSpawner((spawner) =>
        Effect.gen(function* () {
          const fiber = yield* fork({ ...base, processes: 2, maxRestarts: 0, normalExitCodes: [0, 3] })
          yield* spawner.awaitSpawns(2)
          yield* spawner.exit(1000, ExitStatus.exited(3))
          yield* spawner.exit(1001, ExitStatus.exited(0))
          const summary = yield* Fiber.join(fiber)
          assert.strictEqual(summary.restarts, 0)
          assert.strictEqual((yield* spawner.processes).length, 2)
        })
      )
    )

    it.effect("normalExitCodes: 0 is abnormal when not listed", () =>
      withSpawner((spawner) =>
        Effect.gen(function* () {
          const fiber = yield* fork({ ...base, processes: 1, maxRestarts: 0, normalExitCodes: [3] })
          yield* spawner.awaitSpawns(1)
          yield* spawner.exit(1000, ExitStatus.exited(0))
          const error = yield* failure(fiber)
          assert.deepStrictEqual(
            error.exits.map((e) => code(e.status)),
            [0]
          )
        })
      )
    )

    it.effect("a signal is never a normal exit", () =>
      withSpawner((spawner) =>
        Effect.gen(function* () {
          const fiber = yield* fork({ ...base, processes: 1, maxRestarts: 0, normalExitCodes: [0, 15] })
          yield* spawner.awaitSpawns(1)
          yield* spawner.exit(1000, ExitStatus.signaled("SIGTERM"))
          const error = yield* failure(fiber)
          assert.deepStrictEqual(
            error.exits.map((e) => code(e.status)),
            ["SIGTERM"]
          )
        })
      )
    )
  })

  describe("restart modes", () => {
    it.effect('restart: "always" restarts normal exits too, and spends the budget on them', () =>
      withSpawner((spawner) =>
        Effect.gen(function* () {
          const fiber = yield* fork({ ...base, processes: 1, restart: "always", maxRestarts: 2 })
          for (let n = 1; n <= 3; n++) yield* exitNth(spawner, n, ExitStatus.exited(0))
          const error = yield* failure(fiber)
          assert.strictEqual(error.restarts, 2)
          assert.deepStrictEqual(
            error.exits.map((e) => [e.pid, code(e.status)]),
            [
              [1000, 0],
              [1001, 0],
              [1002, 0]
            ]
          )
          assert.strictEqual((yield* spawner.processes).length, 3)
        })
      )
    )

    it.effect('restart: "never" restarts nothing and ends when every slot has exited', () =>
      withSpawner((spawner) =>
        Effect.gen(function* () {
          const fiber = yield* fork({ ...base, processes: 2, restart: "never", maxRestarts: 0 })
          yield* spawner.awaitSpawns(2)
          yield* spawner.exit(1000, ExitStatus.exited(1))
          yield* spawner.exit(1001, ExitStatus.signaled("SIGKILL"))
          const summary = yield* Fiber.join(fiber)
          assert.strictEqual(summary.restarts, 0)
          assert.deepStrictEqual(
            summary.exits.map((e) => [e.pid, code(e.status)]),
            [
              [1000, 1],
              [1001, "SIGKILL"]
            ]
          )
          yield* TestClock.adjust("1 hour")
          assert.strictEqual((yield* spawner.processes).length, 2)
        })
      )
    )
  })

  describe("giving up", () => {
    it.effect("stops and reaps every sibling before TooManyRestarts surfaces", () =>
      withSpawner(
        (spawner) =>
          Effect.gen(function* () {
            const fiber = yield* fork({ ...base, processes: 3, maxRestarts: 0 })
            yield* spawner.awaitSpawns(3)
            yield* TestClock.adjust("1 second")
            yield* spawner.exit(1000, ExitStatus.exited(1))
            yield* settle
            // The siblings take 2 seconds to exit after SIGTERM: the error must wait for them.
            yield* TestClock.adjust("1999 millis")
            assert.isUndefined(fiber.pollUnsafe())
            for (const pid of [1001, 1002]) {
              const p = yield* spawner.process(pid)
              assert.deepStrictEqual(p.signals, [{ signal: "SIGTERM", at: 1000 }])
              assert.isTrue(Option.isNone(p.exitStatus))
            }
            yield* TestClock.adjust("1 milli")
            const error = yield* failure(fiber)
            const observedAt = yield* now
            assert.strictEqual(observedAt, 3000)
            assert.strictEqual(error.restarts, 0)
            for (const pid of [1001, 1002]) {
              const p = yield* spawner.process(pid)
              assert.deepStrictEqual(p.exitStatus, Option.some(ExitStatus.exited(0)))
              assert.isTrue(Option.getOrThrow(p.exitedAt) <= observedAt)
            }
            assert.strictEqual((yield* spawner.processes).length, 3)
          }),
        { signals: { SIGTERM: { exit: ExitStatus.exited(0), after: "2 seconds" } } }
      )
    )

    it.effect("every other process got SIGTERM and was reaped when the error is observed", () =>
      withSpawner((spawner) =>
        Effect.gen(function* () {
          const fiber = yield* fork({ ...base, processes: 4, maxRestarts: 2 })
          yield* spawner.awaitSpawns(4)
          yield* spawner.exit(1000, ExitStatus.exited(1))
          yield* spawner.awaitSpawns(5)
          yield* TestClock.adjust("1 second")
          yield* spawner.exit(1002, ExitStatus.exited(1))
          yield* spawner.awaitSpawns(6)
          yield* TestClock.adjust("1 second")
          yield* spawner.exit(1005, ExitStatus.exited(1))
          const error = yield* failure(fiber)
          const observedAt = yield* now
          assert.strictEqual(error.restarts, 2)
          const all = yield* spawner.processes
          assert.strictEqual(all.length, 6)
          assert.deepStrictEqual(yield* spawner.live, [])
          for (const p of all.filter((p) => [1001, 1003, 1004].includes(p.pid))) {
            assert.deepStrictEqual(
              p.signals.map((s) => s.signal),
              ["SIGTERM"]
            )
            assert.deepStrictEqual(p.exitStatus, Option.some(ExitStatus.signaled("SIGTERM")))
            assert.isTrue(Option.getOrThrow(p.exitedAt) <= observedAt)
          }
          // The process that exited by itself was never signaled.
          assert.deepStrictEqual((yield* spawner.process(1005)).signals, [])
          assert.isFalse((yield* spawner.kills).some((k) => !k.delivered))
        })
      )
    )
  })

  describe("spawn failures", () => {
    it.effect("a failed first spawn ends the supervision with SpawnFailed and stops the started siblings", () =>
      withSpawner((spawner) =>
        Effect.gen(function* () {
          // A spawn that can never work (EACCES); a shortage such as EAGAIN is retried (Supervisor.spawn-retry.test.ts).
          yield* spawner.failNextSpawns(1, { code: "EACCES" })
          const error = yield* Effect.flip(Supervisor.run({ ...base, processes: 3 }))
          assert.strictEqual(error._tag, "SpawnFailed")
          if (error._tag !== "SpawnFailed") return
          assert.strictEqual(error.code, "EACCES")
          assert.deepStrictEqual(yield* spawner.live, [])
          assert.strictEqual((yield* spawner.spawnFailures).length, 1)
        })
      )
    )

    it.effect("a failed respawn ends the supervision with SpawnFailed, siblings reaped first", () =>
      withSpawner((spawner) =>
        Effect.gen(function* () {
          const fiber = yield* fork({ ...base, processes: 2 })
          yield* spawner.awaitSpawns(2)
          yield* spawner.failNextSpawns(1)
          yield* spawner.exit(1000, ExitStatus.exited(1))
          const error = yield* Effect.flip(Fiber.join(fiber))
          assert.strictEqual(error._tag, "SpawnFailed")
          if (error._tag !== "SpawnFailed") return
          assert.strictEqual(error.taskId, 0)
          assert.strictEqual(error.code, "ENOENT")
          const sibling = yield* spawner.process(1001)
          assert.deepStrictEqual(sibling.exitStatus, Option.some(ExitStatus.signaled("SIGTERM")))
          assert.strictEqual((yield* spawner.processes).length, 2)
        })
      )
    )
  })

  describe("stopping", () => {
    it.effect("nothing is spawned once interruption starts (interrupted during a backoff delay)", () =>
      withSpawner((spawner, logs) =>
        Effect.gen(function* () {
          const fiber = yield* fork({ ...base, processes: 1, backoff: { initial: "10 seconds" } })
          yield* spawner.awaitSpawns(1)
          yield* spawner.exit(1000, ExitStatus.exited(1))
          yield* settle
          // The delay is said before it is waited.
          const said = logs.find((l) => l.message.startsWith("child 0 restarting in"))
          assert.strictEqual(said?.message, "child 0 restarting in 10s")
          assert.strictEqual(said?.annotations["delayMillis"], 10_000)
          yield* TestClock.adjust("1 second")
          yield* Fiber.interrupt(fiber)
          const exit = yield* Fiber.await(fiber)
          assert.isTrue(Exit.hasInterrupts(exit))
          assert.isFalse(Exit.hasFails(exit))
          yield* TestClock.adjust("1 hour")
          yield* settle
          assert.strictEqual((yield* spawner.processes).length, 1)
        })
      )
    )

    it.effect("a slot whose backoff ends while its siblings are being stopped spawns nothing", () =>
      withSpawner((spawner) =>
        Effect.gen(function* () {
          const fiber = yield* fork({ ...base, processes: 2, backoff: { initial: "1 second" } })
          yield* spawner.awaitSpawns(2)
          yield* spawner.onSignal(1001, "SIGTERM", { exit: ExitStatus.exited(0), after: "3 seconds" })
          yield* spawner.exit(1000, ExitStatus.exited(1))
          yield* settle
          const interrupting = yield* Effect.forkChild(Fiber.interrupt(fiber))
          yield* settle
          yield* TestClock.adjust("2 seconds")
          assert.isUndefined(interrupting.pollUnsafe())
          assert.strictEqual((yield* spawner.processes).length, 2)
          yield* TestClock.adjust("1 second")
          yield* Fiber.join(interrupting)
          assert.deepStrictEqual((yield* spawner.process(1001)).exitedAt, Option.some(3000))
          yield* TestClock.adjust("1 hour")
          assert.strictEqual((yield* spawner.processes).length, 2)
        })
      )
    )

    it.effect("processes that ignore SIGTERM get SIGKILL exactly at stopTimeout, all within one deadline", () =>
      withSpawner(
        (spawner) =>
          Effect.gen(function* () {
            const fiber = yield* fork({ ...base, processes: 4, stopTimeout: "3 seconds" })
            yield* spawner.awaitSpawns(4)
            yield* TestClock.adjust("1 second")
            const interrupting = yield* Effect.forkChild(Fiber.interrupt(fiber))
            yield* settle
            yield* TestClock.adjust("2999 millis")
            assert.isUndefined(interrupting.pollUnsafe())
            for (const p of yield* spawner.processes) {
              assert.deepStrictEqual(p.signals, [{ signal: "SIGTERM", at: 1000 }])
            }
            assert.strictEqual((yield* spawner.live).length, 4)
            yield* TestClock.adjust("1 milli")
            yield* Fiber.join(interrupting)
            assert.strictEqual(yield* now, 4000)
            const all = yield* spawner.processes
            assert.strictEqual(all.length, 4)
            for (const p of all) {
              assert.deepStrictEqual(p.signals, [
                { signal: "SIGTERM", at: 1000 },
                { signal: "SIGKILL", at: 4000 }
              ])
              assert.deepStrictEqual(p.exitStatus, Option.some(ExitStatus.signaled("SIGKILL")))
              assert.deepStrictEqual(p.exitedAt, Option.some(4000))
            }
          }),
        { signals: { SIGTERM: "ignore" } }
      )
    )

    it.effect("a restart under way when the supervisor stops: the worker gets SIGTERM once, then SIGKILL once", () =>
      withSpawner(
        (spawner) =>
          Effect.gen(function* () {
            const handle = yield* Supervisor.start({ ...base, processes: 1, stopTimeout: "3 seconds" })
            const [worker] = yield* spawner.awaitSpawns(1)
            yield* TestClock.adjust("1 second")
            const restarting = yield* Effect.forkChild(handle.restart(worker!.taskId))
            yield* settle
            const stopping = yield* Effect.forkChild(handle.stop)
            yield* settle
            yield* TestClock.adjust("3 seconds")
            yield* Fiber.join(stopping)
            yield* Fiber.join(restarting)
            const p = yield* spawner.process(worker!.pid)
            assert.deepStrictEqual(p.signals, [
              { signal: "SIGTERM", at: 1000 },
              { signal: "SIGKILL", at: 4000 }
            ])
            // The stop won: no replacement was started.
            assert.strictEqual((yield* spawner.processes).length, 1)
          }).pipe(Effect.scoped),
        { signals: { SIGTERM: "ignore" } }
      )
    )

    it.effect("exits while stopping spend no budget and cause no restart", () =>
      withSpawner(
        (spawner, logs) =>
          Effect.gen(function* () {
            const fiber = yield* fork({ ...base, processes: 3, maxRestarts: 0 })
            yield* spawner.awaitSpawns(3)
            const interrupting = yield* Effect.forkChild(Fiber.interrupt(fiber))
            yield* settle
            yield* TestClock.adjust("500 millis")
            yield* Fiber.join(interrupting)
            const exit = yield* Fiber.await(fiber)
            assert.isTrue(Exit.hasInterrupts(exit))
            assert.isFalse(Exit.hasFails(exit), "an exit while stopping was counted against the budget")
            const all = yield* spawner.processes
            assert.strictEqual(all.length, 3)
            for (const p of all) assert.deepStrictEqual(p.exitStatus, Option.some(ExitStatus.exited(1)))
            yield* TestClock.adjust("1 hour")
            assert.strictEqual((yield* spawner.processes).length, 3)
            assert.isFalse(logs.some((l) => l.message.includes("restarting")))
          }),
        { signals: { SIGTERM: { exit: ExitStatus.exited(1), after: "500 millis" } } }
      )
    )

    it.effect("handle.stop stops every worker and marks the slots stopped", () =>
      withSpawner((spawner) =>
        Effect.scoped(
          Effect.gen(function* () {
            const handle = yield* Supervisor.start({ ...base, processes: 2, maxRestarts: 0 })
            yield* spawner.awaitSpawns(2)
            yield* settle
            yield* handle.stop
            assert.deepStrictEqual(yield* spawner.live, [])
            const status = yield* handle.status
            assert.deepStrictEqual(
              status.map((s) => s.state),
              ["stopped", "stopped"]
            )
            assert.deepStrictEqual(
              status.map((s) => s.restarts),
              [0, 0]
            )
            assert.strictEqual((yield* spawner.processes).length, 2)
          })
        )
      )
    )

    it.effect("closing the scope of Supervisor.start stops every worker", () =>
      withSpawner((spawner) =>
        Effect.gen(function* () {
          yield* Effect.scoped(
            Effect.gen(function* () {
              yield* Supervisor.start({ ...base, processes: 3 })
              yield* spawner.awaitSpawns(3)
            })
          )
          assert.deepStrictEqual(yield* spawner.live, [])
          for (const p of yield* spawner.processes) {
            assert.deepStrictEqual(p.exitStatus, Option.some(ExitStatus.signaled("SIGTERM")))
          }
        })
      )
    )
  })

  describe("processes", () => {
    it.effect("undefined, 0 and -1 mean one per CPU (the affinity mask, capped by the cgroup's CPU quota)", () =>
      Effect.gen(function* () {
        const cpus = cpuCount().count
        assert.isAtMost(cpus, availableParallelism())
        for (const processes of [undefined, 0, -1]) {
          const cfg = yield* Supervisor.config({ ...base, processes })
          assert.strictEqual(cfg.processes, cpus, `processes: ${processes}`)
        }
        yield* withSpawner((spawner) =>
          Effect.scoped(
            Effect.gen(function* () {
              const handle = yield* Supervisor.start({ ...base, processes: 0 })
              assert.strictEqual(handle.processes, cpus)
              const spawned = yield* spawner.awaitSpawns(cpus)
              assert.deepStrictEqual(
                spawned.map((p) => p.taskId).sort((a, b) => a - b),
                Array.from({ length: cpus }, (_, i) => i)
              )
              yield* settle
              assert.strictEqual((yield* spawner.processes).length, cpus)
            })
          )
        )
      })
    )

    it.effect("an explicit count starts exactly that many", () =>
      withSpawner((spawner) =>
        Effect.scoped(
          Effect.gen(function* () {
            yield* Supervisor.start({ ...base, processes: 5 })
            yield* spawner.awaitSpawns(5)
            yield* settle
            yield* TestClock.adjust("1 second")
            assert.deepStrictEqual(
              (yield* spawner.processes).map((p) => p.taskId),
              [0, 1, 2, 3, 4]
            )
          })
        )
      )
    )
  })

  describe("InvalidOptions", () => {
    const cases: ReadonlyArray<readonly [string, Partial<Supervisor.Options>, string]> = [
      ["processes NaN", { processes: NaN }, "processes"],
      ["processes 1.5", { processes: 1.5 }, "processes"],
      ["processes Infinity", { processes: Infinity }, "processes"],
      ["negative maxRestarts", { maxRestarts: -1 }, "maxRestarts"],
      ["fractional maxRestarts", { maxRestarts: 2.5 }, "maxRestarts"],
      ["unknown mode", { mode: "fork" as never }, "mode"],
      ["unknown restart", { restart: "sometimes" as never }, "restart"],
      ["unparseable stopTimeout", { stopTimeout: "soon" as never }, "stopTimeout"],
      ["negative stopTimeout", { stopTimeout: -5 }, "stopTimeout"],
      ["bad backoff.factor", { backoff: { initial: "1 second", factor: 0.5 } }, "backoff.factor"],
      ["zero intensity window", { intensity: { maxRestarts: 1, within: 0 } }, "intensity.within"]
    ]
    for (const [name, options, field] of cases) {
      it.effect(`${name} fails naming ${field}, and spawns nothing`, () =>
        withSpawner((spawner) =>
          Effect.gen(function* () {
            const error = yield* Effect.flip(Supervisor.run({ ...base, processes: 2, ...options }))
            assert.strictEqual(error._tag, "InvalidOptions")
            if (error._tag !== "InvalidOptions") return
            assert.strictEqual(error.field, field)
            assert.include(error.message, field)
            assert.deepStrictEqual(yield* spawner.processes, [])
          })
        )
      )
    }
  })

  describe("logs", () => {
    it.effect("Tornado's lines for restarts, with taskId and pid annotations", () =>
      withSpawner((spawner, logs) =>
        Effect.gen(function* () {
          yield* fork({ ...base, processes: 2 })
          yield* spawner.awaitSpawns(2)
          yield* spawner.exit(1001, ExitStatus.exited(42))
          yield* spawner.awaitSpawns(3)
          yield* spawner.exit(1000, ExitStatus.signaled("SIGKILL"))
          yield* spawner.awaitSpawns(4)
          yield* settle
          const lines = logs.filter((l) => l.message.startsWith("Starting") || l.message.startsWith("child"))
          assert.deepStrictEqual(
            lines.map((l) => [l.level, l.message]),
            [
              ["Info", "Starting 2 processes"],
              ["Warn", "child 1 (pid 1001) exited with status 42, restarting"],
              ["Warn", "child 0 (pid 1000) killed by signal 9, restarting"]
            ]
          )
          assert.strictEqual(lines[1]!.annotations["taskId"], 1)
          assert.strictEqual(lines[1]!.annotations["pid"], 1001)
          assert.strictEqual(lines[2]!.annotations["taskId"], 0)
          assert.strictEqual(lines[2]!.annotations["pid"], 1000)
        })
      )
    )

    it.effect("a stop and a give-up each say how many workers are being stopped, and how", () =>
      withSpawner((spawner, logs) =>
        Effect.gen(function* () {
          const stopped = yield* fork({ ...base, processes: 2, stopTimeout: "2 seconds" })
          yield* spawner.awaitSpawns(2)
          yield* Fiber.interrupt(stopped)
          const givingUp = yield* fork({ ...base, processes: 2, maxRestarts: 0 })
          yield* spawner.awaitSpawns(4)
          yield* spawner.exit(1002, ExitStatus.exited(1))
          yield* Effect.exit(Fiber.join(givingUp))
          assert.deepStrictEqual(
            logs
              .filter((l) => l.message.includes("stopping") || l.message.startsWith("Stopping"))
              .map((l) => l.message),
            [
              "Stopping 2 processes (SIGTERM, then SIGKILL after 2000 ms)",
              "Giving up: stopping 1 process (SIGTERM, then SIGKILL after 5000 ms)"
            ]
          )
        })
      )
    )

    it.effect("Tornado's line for a normal exit", () =>
      withSpawner((spawner, logs) =>
        Effect.gen(function* () {
          const fiber = yield* fork({ ...base, processes: 1 })
          yield* spawner.awaitSpawns(1)
          yield* spawner.exit(1000, ExitStatus.exited(0))
          yield* Fiber.join(fiber)
          const line = logs.find((l) => l.message.startsWith("child"))!
          assert.deepStrictEqual([line.level, line.message], ["Info", "child 0 (pid 1000) exited normally"])
          assert.strictEqual(line.annotations["taskId"], 0)
          assert.strictEqual(line.annotations["pid"], 1000)
          assert.strictEqual(logs.filter((l) => l.message.startsWith("child")).length, 1)
        })
      )
    )

    it.effect('the exit that spends the budget is still logged ", restarting", as Tornado does', () =>
      withSpawner((spawner, logs) =>
        Effect.gen(function* () {
          const fiber = yield* fork({ ...base, processes: 1, maxRestarts: 1 })
          yield* exitNth(spawner, 1, ExitStatus.exited(3))
          yield* exitNth(spawner, 2, ExitStatus.exited(4))
          yield* failure(fiber)
          const lines = logs.filter((l) => l.message.startsWith("child")).map((l) => l.message)
          assert.strictEqual(lines[0], "child 0 (pid 1000) exited with status 3, restarting")
          assert.strictEqual(lines.length, 2)
          assert.strictEqual(lines[1], "child 0 (pid 1001) exited with status 4, restarting")
        })
      )
    )
  })

  describe("handle", () => {
    it.effect("events: Started, Ready, Exited and Finished, in order", () =>
      withSpawner((spawner) =>
        Effect.scoped(
          Effect.gen(function* () {
            const handle = yield* Supervisor.start({ ...base, processes: 2, backoff: { initial: "1 second" } })
            const collecting = yield* handle.events.pipe(
              Stream.runCollect,
              Effect.forkChild({ startImmediately: true })
            )
            yield* spawner.awaitSpawns(2)
            yield* TestClock.adjust("500 millis")
            yield* spawner.exit(1001, ExitStatus.exited(1))
            yield* settle
            yield* TestClock.adjust("1 second")
            yield* spawner.awaitSpawns(3)
            yield* spawner.exit(1000, ExitStatus.exited(0))
            yield* settle
            yield* spawner.exit(1002, ExitStatus.exited(0))
            const summary = yield* handle.await
            assert.strictEqual(summary.restarts, 1)
            const events = yield* Fiber.join(collecting)
            assert.deepStrictEqual(
              events.map((e) => {
                switch (e._tag) {
                  case "Started":
                    return ["Started", e.taskId, e.pid, e.at]
                  case "Ready":
                    return ["Ready", e.taskId, e.pid, e.at]
                  case "Exited":
                    return ["Exited", e.taskId, e.pid, code(e.status), e.restart, e.at]
                  case "Finished":
                    return ["Finished", e.at]
                }
              }),
              [
                ["Started", 0, 1000, 0],
                ["Ready", 0, 1000, 0],
                ["Started", 1, 1001, 0],
                ["Ready", 1, 1001, 0],
                ["Exited", 1, 1001, 1, true, 500],
                ["Started", 1, 1002, 1500],
                ["Ready", 1, 1002, 1500],
                ["Exited", 0, 1000, 0, false, 1500],
                ["Exited", 1, 1002, 0, false, 1500],
                ["Finished", 1500]
              ]
            )
          })
        )
      )
    )

    it.effect("status: a snapshot of every slot", () =>
      withSpawner((spawner) =>
        Effect.scoped(
          Effect.gen(function* () {
            const handle = yield* Supervisor.start({ ...base, processes: 2, backoff: { initial: "1 second" } })
            yield* spawner.awaitSpawns(2)
            yield* settle
            const first = yield* handle.status
            assert.deepStrictEqual(
              first.map((s) => [s.taskId, s.state, s.pid, s.restarts, s.startedAt, s.lastExit]),
              [
                [0, "running", Option.some(1000), 0, Option.some(0), Option.none()],
                [1, "running", Option.some(1001), 0, Option.some(0), Option.none()]
              ]
            )
            yield* TestClock.adjust("500 millis")
            yield* spawner.exit(1001, ExitStatus.exited(1))
            yield* settle
            const restarting = (yield* handle.status)[1]!
            assert.strictEqual(restarting.state, "restarting")
            assert.isTrue(Option.isNone(restarting.pid))
            assert.strictEqual(restarting.restarts, 1)
            assert.deepStrictEqual(restarting.lastExit, Option.some(ExitStatus.exited(1)))
            yield* TestClock.adjust("1 second")
            yield* spawner.awaitSpawns(3)
            yield* settle
            const restarted = (yield* handle.status)[1]!
            assert.strictEqual(restarted.state, "running")
            assert.deepStrictEqual(restarted.pid, Option.some(1002))
            assert.deepStrictEqual(restarted.startedAt, Option.some(1500))
            yield* spawner.exit(1000, ExitStatus.exited(0))
            yield* settle
            const exited = (yield* handle.status)[0]!
            assert.strictEqual(exited.state, "exited")
            assert.deepStrictEqual(exited.lastExit, Option.some(ExitStatus.exited(0)))
            yield* handle.stop
            assert.deepStrictEqual(
              (yield* handle.status).map((s) => s.state),
              ["exited", "stopped"]
            )
          })
        )
      )
    )
  })

  describe("readiness", () => {
    it.effect('ready: "message": a slot is starting until its worker says it is ready', () =>
      withSpawner((spawner) =>
        Effect.scoped(
          Effect.gen(function* () {
            const handle = yield* Supervisor.start({ ...base, mode: "module", processes: 2, ready: "message" })
            const allReady = yield* Effect.forkChild(handle.awaitReady)
            yield* spawner.awaitSpawns(2)
            yield* settle
            assert.deepStrictEqual(
              (yield* handle.status).map((s) => s.state),
              ["starting", "starting"]
            )
            yield* TestClock.adjust("1 second")
            yield* spawner.ready(1001)
            yield* settle
            assert.deepStrictEqual(
              (yield* handle.status).map((s) => s.state),
              ["starting", "running"]
            )
            assert.isUndefined(allReady.pollUnsafe())
            yield* TestClock.adjust("1 second")
            yield* spawner.ready(1000)
            yield* Fiber.join(allReady)
            assert.deepStrictEqual(
              (yield* handle.status).map((s) => s.state),
              ["running", "running"]
            )
            for (const p of yield* spawner.processes) assert.strictEqual(p.request.readiness, "message")
          })
        )
      )
    )

    it.effect("a worker not ready within readyTimeout is stopped at the deadline and counts as a failure", () =>
      withSpawner((spawner, logs) =>
        Effect.gen(function* () {
          const fiber = yield* fork({
            ...base,
            mode: "module",
            processes: 1,
            ready: "message",
            readyTimeout: "2 seconds",
            maxRestarts: 0
          })
          yield* spawner.awaitSpawns(1)
          yield* settle
          yield* TestClock.adjust("1999 millis")
          assert.deepStrictEqual((yield* spawner.process(1000)).signals, [])
          yield* TestClock.adjust("1 milli")
          const error = yield* failure(fiber)
          const p = yield* spawner.process(1000)
          assert.deepStrictEqual(p.signals, [{ signal: "SIGTERM", at: 2000 }])
          assert.strictEqual(error.restarts, 0)
          assert.strictEqual(error.exits.length, 1)
          assert.strictEqual(error.exits[0]!.notReady?._tag, "NotReady")
          assert.isTrue(
            logs.some((l) => l.message.startsWith("child 0 (pid 1000) not ready within 2000 ms")),
            JSON.stringify(logs.map((l) => l.message))
          )
          assert.strictEqual((yield* spawner.processes).length, 1)
        })
      )
    )

    it.effect("a worker that was not ready in time is restarted, spending budget", () =>
      withSpawner(
        (spawner) =>
          Effect.scoped(
            Effect.gen(function* () {
              const handle = yield* Supervisor.start({
                ...base,
                mode: "module",
                processes: 1,
                ready: "message",
                readyTimeout: "2 seconds",
                maxRestarts: 1
              })
              yield* spawner.awaitSpawns(1)
              yield* settle
              yield* TestClock.adjust("2 seconds") // not ready: SIGTERM, ignored
              yield* settle
              yield* TestClock.adjust("5 seconds") // the stop deadline: SIGKILL
              const spawned = yield* spawner.awaitSpawns(2)
              assert.deepStrictEqual(
                spawned[0]!.signals.map((s) => [s.signal, s.at]),
                [
                  ["SIGTERM", 2000],
                  ["SIGKILL", 7000]
                ]
              )
              assert.strictEqual(spawned[1]!.taskId, 0)
              yield* spawner.ready(1001)
              yield* handle.awaitReady
              const [slot] = yield* handle.status
              assert.strictEqual(slot!.restarts, 1)
              assert.strictEqual(slot!.state, "running")
              // let the scope's close stop the new worker without waiting for the deadline
              yield* spawner.setSignalDefault("SIGTERM", "terminate")
            })
          ),
        // workers ignore SIGTERM: the one not ready is killed at the stop deadline
        { signals: { SIGTERM: "ignore" } }
      )
    )

    it.effect("ready: { delay }: ready that long after the start, on Clock", () =>
      withSpawner((spawner) =>
        Effect.scoped(
          Effect.gen(function* () {
            const handle = yield* Supervisor.start({ ...base, processes: 1, ready: { delay: "1500 millis" } })
            const collecting = yield* handle.events.pipe(
              Stream.filter((e) => e._tag === "Ready"),
              Stream.take(1),
              Stream.runCollect,
              Effect.forkChild({ startImmediately: true })
            )
            yield* spawner.awaitSpawns(1)
            yield* settle
            yield* TestClock.adjust("1499 millis")
            assert.strictEqual((yield* handle.status)[0]!.state, "starting")
            yield* TestClock.adjust("1 milli")
            const events = yield* Fiber.join(collecting)
            assert.deepStrictEqual(
              events.map((e) => [e._tag, e.at]),
              [["Ready", 1500]]
            )
          })
        )
      )
    )
  })
})
