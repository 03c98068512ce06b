/**
 * The command's restart policy is a service's (issue 18): with no budget flag
 * it gives up only on a crash loop (a worker restarted more than 5 times within
 * 10 s; every worker crashing at once is not one), with a
 * backoff of 100 ms doubling up to 1 s between a worker's rapid restarts),
 * never because of crashes far apart; `--max-restarts n` is still a total over
 * prefork's life. The options come from `Command.toOptions`; the supervisor
 * runs them with the in-memory spawner under `TestClock`.
 */
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Fiber, Layer, Logger, Option } from "effect"
import { TestClock } from "effect/testing"
import type { BindFailed, InvalidOptions, SpawnFailed, TooManyRestarts } from "../../src/Errors.ts"
import * as ExitStatus from "../../src/ExitStatus.ts"
import * as Supervisor from "../../src/Supervisor.ts"
import * as TestSpawner from "../../src/testing/TestSpawner.ts"
import * as Argv from "../../src/cli/Argv.ts"
import * as Command from "../../src/cli/Command.ts"
import { input as parsed } from "./input.ts"

/** `prefork -n 2 --no-prefix -- node app.js`, with `overrides`. */
const input = (overrides: Partial<Command.Input>): Command.Input => parsed({ prefix: false, ...overrides })

const ms = (d: Duration.Input | undefined) =>
  d === undefined ? undefined : Duration.toMillis(Duration.fromInputUnsafe(d))

describe("the command's default restart policy", () => {
  it.effect("no budget flag: intensity 5/10s per worker, no lifetime total, backoff 100ms doubling up to 1s", () =>
    Effect.gen(function* () {
      const options = yield* Command.toOptions(input({}), undefined)
      assert.strictEqual(options.maxRestarts, undefined)
      assert.strictEqual(options.intensity?.maxRestarts, 5)
      assert.strictEqual(ms(options.intensity?.within), 10_000)
      assert.strictEqual(options.intensity?.per, "worker")
      assert.strictEqual(ms(options.backoff?.initial), 100)
      assert.strictEqual(ms(options.backoff?.max), 1_000)
    })
  )

  it.effect("--max-restarts n is a lifetime total and replaces the intensity; --backoff replaces the backoff", () =>
    Effect.gen(function* () {
      const total = yield* Command.toOptions(input({ maxRestarts: Option.some(7) }), undefined)
      assert.strictEqual(total.maxRestarts, 7)
      assert.strictEqual(total.intensity, undefined)
      const both = yield* Command.toOptions(
        input({
          maxRestarts: Option.some(7),
          intensity: Option.some({ maxRestarts: 2, within: Duration.seconds(1), per: "supervisor" as const })
        }),
        undefined
      )
      assert.strictEqual(both.maxRestarts, 7)
      assert.strictEqual(both.intensity?.maxRestarts, 2)
      assert.strictEqual(both.intensity?.per, "supervisor")
      // Tornado's rule exactly: --max-restarts 100 --backoff 0.
      const tornado = yield* Command.toOptions(
        input({ maxRestarts: Option.some(100), backoff: Option.some(Duration.zero) }),
        undefined
      )
      assert.strictEqual(tornado.maxRestarts, 100)
      assert.strictEqual(tornado.intensity, undefined)
      assert.strictEqual(ms(tornado.backoff?.initial), 0)
      assert.strictEqual(tornado.backoff?.max, undefined) // the library's 30s
      // --backoff-max alone bounds the default backoff.
      const longer = yield* Command.toOptions(input({ backoffMax: Option.some(Duration.seconds(5)) }), undefined)
      assert.strictEqual(ms(longer.backoff?.initial), 100)
      assert.strictEqual(ms(longer.backoff?.max), 5_000)
    })
  )
})

type Control = TestSpawner.TestSpawner["Service"]

/** Runs `prefork` with the default policy and `body` acting on its in-memory processes, under TestClock. */
const supervised = <A>(
  body: (
    spawner: Control,
    run: Fiber.Fiber<Supervisor.Summary, TooManyRestarts | SpawnFailed | InvalidOptions | BindFailed>
  ) => Effect.Effect<A>,
  processes = 2
) =>
  Effect.gen(function* () {
    const options = yield* Command.toOptions(input({ processes }), undefined)
    const spawner = yield* TestSpawner.TestSpawner
    const run = yield* Effect.forkChild(Supervisor.run(options))
    yield* spawner.awaitSpawns(processes)
    return yield* body(spawner, run)
  }).pipe(Effect.provide(Layer.merge(TestSpawner.layer(), Logger.layer([]))))

const now = Effect.clockWith((clock) => Effect.succeed(clock.currentTimeMillisUnsafe()))

describe("the default policy, under TestClock", () => {
  it.effect("a crash loop (every worker dies 200 ms after it starts) gives up within 10 s, with growing delays", () =>
    supervised((spawner, run) =>
      Effect.gen(function* () {
        const start = yield* now
        // Bounded: at most 200 steps of 50 ms (10 s of test time).
        for (let step = 0; step < 200 && run.pollUnsafe() === undefined; step++) {
          const at = yield* now
          for (const p of yield* spawner.live) {
            if (at - p.spawnedAt >= 200) yield* spawner.exit(p.pid, ExitStatus.exited(1))
          }
          yield* TestClock.adjust("50 millis")
        }
        const exit = yield* Fiber.await(run)
        assert.isTrue(exit._tag === "Failure", "the supervisor gave up")
        const error = yield* Effect.orDie(Effect.flip(Fiber.join(run)))
        assert.strictEqual(error._tag, "TooManyRestarts")
        // Each worker may be restarted 5 times within 10 s: the 6th exit of one of them gives up.
        const restarts = error._tag === "TooManyRestarts" ? error.restarts : -1
        assert.isAtLeast(restarts, 5)
        assert.isAtMost(restarts, 10)
        assert.isBelow((yield* now) - start, 10_000)
        // Slot 0's restarts waited 100 ms, then 200 ms, … (its start times, less its 200 ms lives).
        const slot0 = (yield* spawner.processes).filter((p) => p.taskId === 0).map((p) => p.spawnedAt)
        const waits = slot0.slice(1).map((t, i) => t - slot0[i]! - 200)
        assert.isAtLeast(waits.length, 2)
        assert.isAtLeast(waits[0]!, 100)
        assert.isAtLeast(waits[1]!, 200)
        assert.deepStrictEqual(yield* spawner.live, [])
      })
    )
  )

  it.effect("crashes far apart (one every 3 s, 200 of them: twice the library's lifetime 100) never give up", () =>
    supervised((spawner, run) =>
      Effect.gen(function* () {
        for (let crash = 0; crash < 200; crash++) {
          yield* TestClock.adjust("3 seconds")
          const [oldest] = yield* spawner.live
          assert.isDefined(oldest, `a worker is running before crash ${crash}`)
          yield* spawner.exit(oldest!.pid, ExitStatus.exited(1))
          yield* TestClock.adjust("1 second") // the longest backoff
          yield* spawner.awaitSpawns(3 + crash)
        }
        yield* TestClock.adjust("3 seconds")
        assert.isUndefined(run.pollUnsafe(), "still supervising")
        assert.strictEqual((yield* spawner.live).length, 2)
        assert.strictEqual((yield* spawner.processes).length, 202)
        yield* Fiber.interrupt(run)
      })
    )
  )

  it.effect(
    "8 workers all crashing at the same moment, twice within 10 s, is not a crash loop; one worker's loop is",
    () =>
      supervised(
        (spawner, run) =>
          Effect.gen(function* () {
            for (let round = 0; round < 2; round++) {
              yield* TestClock.adjust("2 seconds")
              for (const p of yield* spawner.live) yield* spawner.exit(p.pid, ExitStatus.exited(1))
              yield* TestClock.adjust("1 second") // the longest backoff
              yield* spawner.awaitSpawns(8 * (round + 2))
            }
            assert.isUndefined(run.pollUnsafe(), "16 restarts in 6 s, two per worker: still supervising")
            assert.strictEqual((yield* spawner.live).length, 8)
            // Now worker 3 alone dies at once, every time: its 6th restart within 10 s gives up.
            for (let step = 0; step < 200 && run.pollUnsafe() === undefined; step++) {
              for (const p of yield* spawner.live) if (p.taskId === 3) yield* spawner.exit(p.pid, ExitStatus.exited(1))
              yield* TestClock.adjust("50 millis")
            }
            const error = yield* Effect.orDie(Effect.flip(Fiber.join(run)))
            assert.strictEqual(error._tag, "TooManyRestarts")
            assert.strictEqual(error._tag === "TooManyRestarts" ? error.exits.at(-1)?.taskId : -1, 3)
            assert.deepStrictEqual(yield* spawner.live, [])
          }),
        8
      )
  )
})

describe("--intensity", () => {
  it("reads n/window, all workers together, or each alone with ,per-worker; refuses the rest", () => {
    const read = (text: string) =>
      Option.map(Argv.parseIntensity(text), (i) => ({ n: i.maxRestarts, ms: Duration.toMillis(i.within), per: i.per }))
    assert.deepStrictEqual(read("5/10s"), Option.some({ n: 5, ms: 10_000, per: "supervisor" as const }))
    assert.deepStrictEqual(read("3/1m,per-worker"), Option.some({ n: 3, ms: 60_000, per: "worker" as const }))
    for (const bad of ["5", "x/10s", "5/0s", "5/10s,per-task", "5/10s,"]) assert.isTrue(Option.isNone(read(bad)), bad)
  })
})
