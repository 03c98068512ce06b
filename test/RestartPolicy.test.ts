/**
 * The restart policy: the pure rules, the budget stepped under `TestClock`,
 * and the same rules seen through a supervisor running on the in-memory
 * spawner (intensity window, backoff, resetAfter, a schedule's own delays).
 */
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Fiber, Layer, Logger, Option, Schedule } from "effect"
import type * as Scope from "effect/Scope"
import { TestClock } from "effect/testing"
import {
  type BindFailed,
  ExitRecord,
  type InvalidOptions,
  type SpawnFailed,
  type TooManyRestarts
} from "../src/Errors.ts"
import * as ExitStatus from "../src/ExitStatus.ts"
import type { ProcessSpawner } from "../src/ProcessSpawner.ts"
import * as RestartPolicy from "../src/RestartPolicy.ts"
import * as Supervisor from "../src/Supervisor.ts"
import * as TestSpawner from "../src/testing/TestSpawner.ts"

// -----------------------------------------------------------------------------
// harness
// -----------------------------------------------------------------------------

type Control = TestSpawner.TestSpawner["Service"]

const silent = Logger.layer([Logger.make<unknown, void>(() => {})])

const withSpawner = <A, E>(
  body: (spawner: Control) => Effect.Effect<A, E, ProcessSpawner | Scope.Scope>,
  options?: TestSpawner.Options
): Effect.Effect<A, E, Scope.Scope> =>
  Effect.gen(function* () {
    const spawner = yield* TestSpawner.TestSpawner
    return yield* body(spawner)
  }).pipe(Effect.provide(Layer.merge(TestSpawner.layer(options), silent)))

const settle = Effect.gen(function* () {
  for (let i = 0; i < 25; i++) yield* Effect.yieldNow
})

const base = { command: "worker", stopTimeout: "5 seconds" } as const

const fork = (options: Supervisor.Options) => Effect.forkChild(Supervisor.run(options))

const failure = <A>(fiber: Fiber.Fiber<A, TooManyRestarts | SpawnFailed | InvalidOptions | BindFailed>) =>
  Effect.map(Effect.flip(Fiber.join(fiber)), (error) => {
    if (error._tag !== "TooManyRestarts") throw new Error(`expected TooManyRestarts, got ${error._tag}`)
    return error
  })

const policy = (options: RestartPolicy.RestartOptions) => RestartPolicy.make(options)

const record = (at = 0) => new ExitRecord({ taskId: 0, pid: 1000, status: ExitStatus.exited(1), at })

/** Steps a budget at each of the given times (advancing the TestClock), returning the decisions. */
const stepAt = (budget: RestartPolicy.Budget, times: ReadonlyArray<number>) =>
  Effect.gen(function* () {
    const step = yield* RestartPolicy.start(yield* policy({ budget }))
    const out: Array<number | "done"> = []
    for (const t of times) {
      const current = yield* Effect.clockWith((c) => Effect.succeed(c.currentTimeMillisUnsafe()))
      if (t > current) yield* TestClock.adjust(t - current)
      const decision = yield* step(record(t))
      out.push(Option.isSome(decision) ? Duration.toMillis(decision.value) : "done")
    }
    return out
  })

/**
 * Drives one slot: waits for the next process, lets it live `uptime`, ends it
 * with code 1, and returns when it was spawned.
 */
const crashAfter = (spawner: Control, n: number, uptime: Duration.Input) =>
  Effect.gen(function* () {
    const spawned = yield* spawner.awaitSpawns(n)
    const p = spawned[n - 1]!
    if (Duration.toMillis(Duration.fromInputUnsafe(uptime)) > 0) yield* TestClock.adjust(uptime)
    yield* spawner.exit(p.pid, ExitStatus.exited(1))
    yield* settle
    return p.spawnedAt
  })

/** Asserts that process `n` is not spawned before `at - 1` and is spawned exactly at `at`. */
const expectSpawnAt = (spawner: Control, n: number, at: number) =>
  Effect.gen(function* () {
    const current = yield* Effect.clockWith((c) => Effect.succeed(c.currentTimeMillisUnsafe()))
    if (at - 1 > current) yield* TestClock.adjust(at - 1 - current)
    yield* settle
    assert.strictEqual((yield* spawner.processes).length, n - 1, `process ${n} spawned before ${at}`)
    yield* TestClock.adjust(at - Math.max(current, at - 1))
    const spawned = yield* spawner.awaitSpawns(n)
    assert.strictEqual(spawned[n - 1]!.spawnedAt, at)
  })

// -----------------------------------------------------------------------------
// pure rules
// -----------------------------------------------------------------------------

describe("RestartPolicy", () => {
  it.effect("defaults: on-failure, code 0 normal, no backoff, resetAfter 10 seconds", () =>
    Effect.gen(function* () {
      const p = yield* policy({})
      assert.strictEqual(p.restart, "on-failure")
      assert.deepStrictEqual([...p.normalExitCodes], [0])
      assert.isTrue(Option.isNone(p.backoff))
      assert.strictEqual(Duration.toMillis(p.resetAfter), 10_000)
      assert.strictEqual(RestartPolicy.DEFAULT_MAX_RESTARTS, 100)
    })
  )

  it.effect("isNormal and shouldRestart", () =>
    Effect.gen(function* () {
      const onFailure = yield* policy({ normalExitCodes: [0, 2] })
      const always = yield* policy({ restart: "always" })
      const never = yield* policy({ restart: "never" })
      const cases: ReadonlyArray<readonly [ExitStatus.ExitStatus, boolean]> = [
        [ExitStatus.exited(0), true],
        [ExitStatus.exited(2), true],
        [ExitStatus.exited(1), false],
        [ExitStatus.signaled("SIGTERM"), false],
        [ExitStatus.signaled("SIGKILL"), false]
      ]
      for (const [status, normal] of cases) {
        assert.strictEqual(RestartPolicy.isNormal(onFailure, status), normal)
        assert.strictEqual(RestartPolicy.shouldRestart(onFailure, status), !normal)
        assert.isTrue(RestartPolicy.shouldRestart(always, status))
        assert.isFalse(RestartPolicy.shouldRestart(never, status))
      }
    })
  )

  it.effect("backoffDelay: initial × factor^(k−1), capped at max; zero without backoff", () =>
    Effect.gen(function* () {
      const none = yield* policy({})
      assert.isTrue(Duration.isZero(RestartPolicy.backoffDelay(none, 3)))
      const p = yield* policy({ backoff: { initial: "1 second", max: "5 seconds" } })
      assert.deepStrictEqual(
        [0, 1, 2, 3, 4, 5, 2000].map((k) => Duration.toMillis(RestartPolicy.backoffDelay(p, k))),
        [0, 1000, 2000, 4000, 5000, 5000, 5000]
      )
      const triple = yield* policy({ backoff: { initial: 100, factor: 3 } })
      assert.deepStrictEqual(
        [1, 2, 3].map((k) => Duration.toMillis(RestartPolicy.backoffDelay(triple, k))),
        [100, 300, 900]
      )
      // default max: 30 seconds
      assert.strictEqual(Duration.toMillis(RestartPolicy.backoffDelay(triple, 50)), 30_000)
    })
  )

  describe("budgets", () => {
    it.effect("maxRestarts(3): exactly 3 steps, the 4th is done", () =>
      Effect.gen(function* () {
        assert.deepStrictEqual(yield* stepAt(RestartPolicy.maxRestarts(3), [0, 0, 0, 0]), [0, 0, 0, "done"])
      })
    )

    it.effect("maxRestarts(0): the first step is done", () =>
      Effect.gen(function* () {
        assert.deepStrictEqual(yield* stepAt(RestartPolicy.maxRestarts(0), [0]), ["done"])
      })
    )

    it.effect("maxRestarts(Infinity) never ends", () =>
      Effect.gen(function* () {
        const decisions = yield* stepAt(
          RestartPolicy.maxRestarts(Infinity),
          Array.from({ length: 500 }, () => 0)
        )
        assert.isFalse(decisions.includes("done"))
      })
    )

    it.effect("intensity(1, 1s): steps 2.1 seconds apart never end", () =>
      Effect.gen(function* () {
        const times = Array.from({ length: 200 }, (_, i) => i * 2100)
        const decisions = yield* stepAt(RestartPolicy.intensity(1, "1 second"), times)
        assert.isFalse(decisions.includes("done"))
      })
    )

    it.effect("intensity(2, 1s): a third step within the window is done", () =>
      Effect.gen(function* () {
        assert.deepStrictEqual(yield* stepAt(RestartPolicy.intensity(2, "1 second"), [0, 500, 999]), [0, 0, "done"])
      })
    )

    it.effect("intensity(2, 1s): the window slides", () =>
      Effect.gen(function* () {
        // At 1000 the step at 0 has left the window; at 1400 the steps at 500 and 1000 are both in it.
        assert.deepStrictEqual(yield* stepAt(RestartPolicy.intensity(2, "1 second"), [0, 500, 1000, 1400]), [
          0,
          0,
          0,
          "done"
        ])
      })
    )

    it.effect("intensity(0, …) allows no restart", () =>
      Effect.gen(function* () {
        assert.deepStrictEqual(yield* stepAt(RestartPolicy.intensity(0, "1 second"), [0]), ["done"])
      })
    )

    it.effect("maxRestarts and intensity together: whichever ends first", () =>
      Effect.gen(function* () {
        const spaced = yield* RestartPolicy.start(
          yield* policy({ maxRestarts: 2, intensity: { maxRestarts: 1, within: "1 second" } })
        )
        const a = yield* spaced(record())
        yield* TestClock.adjust("2 seconds")
        const b = yield* spaced(record())
        yield* TestClock.adjust("2 seconds")
        const c = yield* spaced(record())
        assert.deepStrictEqual([Option.isSome(a), Option.isSome(b), Option.isSome(c)], [true, true, false])

        const burst = yield* RestartPolicy.start(
          yield* policy({ maxRestarts: 10, intensity: { maxRestarts: 1, within: "1 second" } })
        )
        assert.isTrue(Option.isSome(yield* burst(record())))
        assert.isTrue(Option.isNone(yield* burst(record())))
      })
    )

    it.effect("intensity alone replaces the default maxRestarts", () =>
      Effect.gen(function* () {
        const step = yield* RestartPolicy.start(yield* policy({ intensity: { maxRestarts: 1, within: "1 second" } }))
        for (let i = 0; i < 150; i++) {
          assert.isTrue(Option.isSome(yield* step(record())), `step ${i}`)
          yield* TestClock.adjust("1 second")
        }
      })
    )
  })

  describe("validation", () => {
    const cases: ReadonlyArray<readonly [string, RestartPolicy.RestartOptions, string]> = [
      ["negative maxRestarts", { maxRestarts: -1 }, "maxRestarts"],
      ["NaN maxRestarts", { maxRestarts: NaN }, "maxRestarts"],
      ["fractional maxRestarts", { maxRestarts: 1.5 }, "maxRestarts"],
      ["unknown restart", { restart: "sometimes" as never }, "restart"],
      ["bad normalExitCodes", { normalExitCodes: [0, 256] }, "normalExitCodes"],
      ["infinite intensity", { intensity: { maxRestarts: Infinity, within: "1 second" } }, "intensity.maxRestarts"],
      ["bad intensity window", { intensity: { maxRestarts: 1, within: "whenever" as never } }, "intensity.within"],
      ["bad backoff.initial", { backoff: { initial: -1 } }, "backoff.initial"],
      ["bad backoff.max", { backoff: { initial: 1, max: "later" as never } }, "backoff.max"],
      ["bad backoff.factor", { backoff: { initial: 1, factor: NaN } }, "backoff.factor"],
      ["bad resetAfter", { resetAfter: "eventually" as never }, "resetAfter"],
      ["budget not a Schedule", { budget: 3 as never }, "budget"]
    ]
    for (const [name, options, field] of cases) {
      it.effect(`${name} is InvalidOptions naming ${field}`, () =>
        Effect.gen(function* () {
          const error = yield* Effect.flip(policy(options))
          assert.strictEqual(error._tag, "InvalidOptions")
          assert.strictEqual(error.field, field)
        })
      )
    }

    it.effect("maxRestarts: Infinity is valid", () =>
      Effect.gen(function* () {
        yield* policy({ maxRestarts: Infinity })
      })
    )
  })

  // ---------------------------------------------------------------------------
  // through a supervisor
  // ---------------------------------------------------------------------------

  describe("in a supervisor", () => {
    it.effect("intensity 1 per second: failures every 2.1 seconds never exhaust it (even past 100)", () =>
      withSpawner((spawner) =>
        Effect.gen(function* () {
          const fiber = yield* fork({ ...base, processes: 1, intensity: { maxRestarts: 1, within: "1 second" } })
          for (let n = 1; n <= 120; n++) yield* crashAfter(spawner, n, "2100 millis")
          yield* spawner.awaitSpawns(121)
          assert.isUndefined(fiber.pollUnsafe())
          // then a burst: the 121st process dies at once, within a second of the last restart
          yield* spawner.exit(1120, ExitStatus.exited(1))
          const error = yield* failure(fiber)
          assert.strictEqual(error.restarts, 120)
          assert.strictEqual(error.exits.length, 121)
          assert.strictEqual((yield* spawner.processes).length, 121)
        })
      )
    )

    it.effect("intensity 2 per second: a burst of 3 exits across slots gives up", () =>
      withSpawner((spawner) =>
        Effect.gen(function* () {
          const fiber = yield* fork({ ...base, processes: 3, intensity: { maxRestarts: 2, within: "1 second" } })
          yield* spawner.awaitSpawns(3)
          yield* spawner.exit(1000, ExitStatus.exited(1))
          yield* spawner.awaitSpawns(4)
          yield* TestClock.adjust("300 millis")
          yield* spawner.exit(1001, ExitStatus.exited(1))
          yield* spawner.awaitSpawns(5)
          yield* TestClock.adjust("300 millis")
          yield* spawner.exit(1002, ExitStatus.exited(1))
          const error = yield* failure(fiber)
          assert.strictEqual(error.restarts, 2)
          assert.deepStrictEqual(
            error.exits.map((e) => [e.pid, e.at]),
            [
              [1000, 0],
              [1001, 300],
              [1002, 600]
            ]
          )
          assert.strictEqual((yield* spawner.processes).length, 5)
          assert.deepStrictEqual(yield* spawner.live, [])
        })
      )
    )

    it.effect("backoff: exact delays, nothing spawned before, spawned at them", () =>
      withSpawner((spawner) =>
        Effect.gen(function* () {
          yield* fork({ ...base, processes: 1, backoff: { initial: "1 second", max: "5 seconds" } })
          // Each process dies at once: delays 1s, 2s, 4s, then capped at 5s.
          const expected = [1000, 3000, 7000, 12000, 17000]
          yield* crashAfter(spawner, 1, 0)
          for (let i = 0; i < expected.length; i++) {
            yield* expectSpawnAt(spawner, i + 2, expected[i]!)
            yield* crashAfter(spawner, i + 2, 0)
          }
          assert.deepStrictEqual(
            (yield* spawner.processes).map((p) => p.spawnedAt),
            [0, ...expected]
          )
        })
      )
    )

    it.effect("backoff is per slot", () =>
      withSpawner((spawner) =>
        Effect.gen(function* () {
          yield* fork({ ...base, processes: 2, backoff: { initial: "1 second" } })
          yield* spawner.awaitSpawns(2)
          // slot 0 fails twice in a row: its next delay is 2 seconds
          yield* spawner.exit(1000, ExitStatus.exited(1))
          yield* settle
          yield* expectSpawnAt(spawner, 3, 1000)
          yield* spawner.exit(1002, ExitStatus.exited(1))
          yield* settle
          // slot 1 fails for the first time: 1 second, not 2 or 4
          yield* spawner.exit(1001, ExitStatus.exited(1))
          yield* settle
          yield* expectSpawnAt(spawner, 4, 2000)
          assert.strictEqual((yield* spawner.processes)[3]!.taskId, 1)
          yield* expectSpawnAt(spawner, 5, 3000)
          assert.strictEqual((yield* spawner.processes)[4]!.taskId, 0)
        })
      )
    )

    it.effect("resetAfter: a worker that stayed up that long starts its backoff over", () =>
      withSpawner((spawner) =>
        Effect.gen(function* () {
          yield* fork({ ...base, processes: 1, backoff: { initial: "1 second" }, resetAfter: "10 seconds" })
          yield* crashAfter(spawner, 1, 0) // failure 1 at 0 → 1s
          yield* expectSpawnAt(spawner, 2, 1000)
          yield* crashAfter(spawner, 2, 0) // failure 2 at 1000 → 2s
          yield* expectSpawnAt(spawner, 3, 3000)
          yield* crashAfter(spawner, 3, "10 seconds") // up 10s: counts as failure 1 → 1s
          yield* expectSpawnAt(spawner, 4, 14000)
        })
      )
    )

    it.effect("resetAfter: a worker that stayed up just less keeps backing off", () =>
      withSpawner((spawner) =>
        Effect.gen(function* () {
          yield* fork({ ...base, processes: 1, backoff: { initial: "1 second" }, resetAfter: "10 seconds" })
          yield* crashAfter(spawner, 1, 0)
          yield* expectSpawnAt(spawner, 2, 1000)
          yield* crashAfter(spawner, 2, 0)
          yield* expectSpawnAt(spawner, 3, 3000)
          yield* crashAfter(spawner, 3, "9999 millis") // failure 3 → 4s
          yield* expectSpawnAt(spawner, 4, 3000 + 9999 + 4000)
        })
      )
    )

    it.effect("a budget schedule's own delay is waited before the restart", () =>
      withSpawner((spawner) =>
        Effect.gen(function* () {
          const fiber = yield* fork({
            ...base,
            processes: 1,
            budget: Schedule.max([Schedule.recurs(2), Schedule.spaced("2 seconds")])
          })
          yield* crashAfter(spawner, 1, 0)
          yield* expectSpawnAt(spawner, 2, 2000)
          yield* crashAfter(spawner, 2, 0)
          yield* expectSpawnAt(spawner, 3, 4000)
          yield* crashAfter(spawner, 3, 0)
          const error = yield* failure(fiber)
          assert.strictEqual(error.restarts, 2)
        })
      )
    )

    it.effect("the larger of the budget's delay and the backoff is waited", () =>
      withSpawner((spawner) =>
        Effect.gen(function* () {
          yield* fork({
            ...base,
            processes: 1,
            budget: Schedule.spaced("1500 millis"),
            backoff: { initial: "1 second" }
          })
          yield* crashAfter(spawner, 1, 0) // budget 1.5s, backoff 1s
          yield* expectSpawnAt(spawner, 2, 1500)
          yield* crashAfter(spawner, 2, 0) // budget 1.5s, backoff 2s
          yield* expectSpawnAt(spawner, 3, 3500)
        })
      )
    )

    it.effect("without backoff a restart waits no clock time", () =>
      withSpawner((spawner) =>
        Effect.gen(function* () {
          yield* fork({ ...base, processes: 1 })
          yield* crashAfter(spawner, 1, 0)
          const spawned = yield* spawner.awaitSpawns(2)
          assert.strictEqual(spawned[1]!.spawnedAt, 0)
        })
      )
    )
  })
})

describe("intensity per worker", () => {
  it.effect("each task id has its own window: many workers once each pass, one worker's burst gives up", () =>
    Effect.gen(function* () {
      const policy = yield* RestartPolicy.make({ intensity: { maxRestarts: 2, within: "10 seconds", per: "worker" } })
      assert.isUndefined(policy.limits?.intensity, "no single remaining count for a per-worker window")
      const step = yield* RestartPolicy.start(policy)
      const exit = (taskId: number) =>
        new ExitRecord({ taskId, pid: 100 + taskId, status: ExitStatus.exited(1), at: 0 })
      for (let taskId = 0; taskId < 16; taskId++) assert.isTrue(Option.isSome(yield* step(exit(taskId))))
      assert.isTrue(Option.isSome(yield* step(exit(3))))
      assert.isTrue(Option.isNone(yield* step(exit(3))), "task 3's third restart within 10 s")
    })
  )

  it.effect("a bad per is an InvalidOptions naming intensity.per", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(
        RestartPolicy.make({ intensity: { maxRestarts: 2, within: "1 second", per: "task" as unknown as "worker" } })
      )
      assert.strictEqual(error.field, "intensity.per")
    })
  )
})
