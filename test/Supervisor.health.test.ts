/**
 * The production lifecycle under `TestClock`, with the in-memory spawner:
 * the heartbeat deadline, memory sampling, lifetimes with jitter, recycling
 * and warm spares. Every timing rule is checked to the millisecond.
 */
import { assert, describe, it } from "@effect/vitest"
import { Clock, Effect, Exit, Fiber, Layer, Logger, Metric, Option, Stream, Tracer } from "effect"
import * as Duration from "effect/Duration"
import type * as Scope from "effect/Scope"
import { TestClock } from "effect/testing"
import type { InvalidOptions } from "../src/Errors.ts"
import * as ExitStatus from "../src/ExitStatus.ts"
import { TaskId } from "../src/TaskId.ts"
import type { ProcessSpawner } from "../src/ProcessSpawner.ts"
import * as Metrics from "../src/Metrics.ts"
import * as Supervisor from "../src/Supervisor.ts"
import * as TestSpawner from "../src/testing/TestSpawner.ts"

type Control = TestSpawner.TestSpawner["Service"]

const withSpawner = <A, E>(
  body: (spawner: Control) => Effect.Effect<A, E, ProcessSpawner | Scope.Scope>,
  options?: TestSpawner.Options
): Effect.Effect<A, E, Scope.Scope> =>
  Effect.gen(function* () {
    const spawner = yield* TestSpawner.TestSpawner
    return yield* body(spawner)
  }).pipe(Effect.provide(Layer.merge(TestSpawner.layer(options), Logger.layer([]))))

/** Lets every fiber that can run do so (bounded). */
const settle = Effect.gen(function* () {
  for (let i = 0; i < 50; i++) yield* Effect.yieldNow
})

const now = Effect.clockWith((clock) => Effect.succeed(clock.currentTimeMillisUnsafe()))

/** Moves the clock `ms` forward in 1 ms steps, settling after each (so timers fire at their exact time). */
const advance = (ms: number) =>
  Effect.gen(function* () {
    for (let i = 0; i < ms; i++) {
      yield* TestClock.adjust(1)
      yield* settle
    }
  })

/**
 * The test clock with a wall reading that can be stepped (`step`), as NTP or
 * an operator steps a real one: its monotonic reading and its timers do not
 * move. And a supervisor that stops running for a while (`stall`): the
 * monotonic clock moves on at once, and the timers due meanwhile fire late,
 * when `advance` reaches them. Time goes forward with its own `advance` (the
 * wrapper is not a `TestClock`). Provide `clock` as the `Clock`.
 */
const steppedWall = Effect.map(TestClock.testClockWith(Effect.succeed), (test) => {
  let offset = 0
  let stalled = 0n
  const wallMillis = () => test.currentTimeMillisUnsafe() + offset
  const wallNanos = () => test.currentTimeNanosUnsafe() + BigInt(offset) * 1_000_000n
  const clock: Clock.Clock = {
    currentTimeMillisUnsafe: wallMillis,
    currentTimeMillis: Effect.sync(wallMillis),
    currentTimeNanosUnsafe: wallNanos,
    currentTimeNanos: Effect.sync(wallNanos),
    monotonicTimeNanosUnsafe: () => test.monotonicTimeNanosUnsafe() + stalled,
    monotonicTimeNanos: Effect.sync(() => test.monotonicTimeNanosUnsafe() + stalled),
    sleep: (duration) => test.sleep(duration)
  }
  const step = (millis: number) =>
    Effect.sync(() => {
      offset += millis
    })
  const stall = (millis: number) =>
    Effect.sync(() => {
      stalled += BigInt(millis) * 1_000_000n
    })
  const advance = (ms: number) =>
    Effect.gen(function* () {
      for (let i = 0; i < ms; i++) {
        yield* test.adjust(1)
        yield* settle
      }
    })
  return { clock, step, stall, advance }
})

type SteppedWall = Effect.Success<typeof steppedWall>

/** Starts a supervisor and records its events. */
const started = (options: Supervisor.Options) =>
  Effect.gen(function* () {
    const handle = yield* Supervisor.start(options)
    const events: Array<Supervisor.Event> = []
    yield* handle.events.pipe(
      Stream.runForEach((e) => Effect.sync(() => events.push(e))),
      Effect.forkScoped
    )
    yield* settle
    return { handle, events }
  })

const base = { command: "worker", mode: "module", stopTimeout: "5 seconds" } as const

const exited = (events: ReadonlyArray<Supervisor.Event>) =>
  events.filter((e): e is Extract<Supervisor.Event, { _tag: "Exited" }> => e._tag === "Exited")

describe("heartbeats", () => {
  it.effect(
    "a worker that stops beating is sent its diagnostic signal at the deadline, SIGKILL 2 s later, and is restarted as a failure",
    () =>
      withSpawner((spawner) =>
        Effect.gen(function* () {
          const { events, handle } = yield* started({
            ...base,
            processes: 1,
            heartbeat: { timeout: "1 second", interval: "250 millis" }
          })
          const [first] = yield* spawner.awaitSpawns(1)
          assert.strictEqual(durationMs(first!.request.heartbeat), 250)
          // Beating: nothing happens for a long while.
          yield* advance(3000)
          assert.isAbove((yield* spawner.process(first!.pid)).heartbeats, 10)
          assert.deepStrictEqual(yield* spawner.kills, [])
          // The last beat was at 3000 (a multiple of 250): the loop blocks now.
          yield* spawner.hang(first!.pid)
          yield* advance(999)
          assert.deepStrictEqual(yield* spawner.kills, [], "nothing before the deadline")
          yield* advance(1)
          const kills1 = yield* spawner.kills
          assert.deepStrictEqual(
            kills1.map((k) => [k.signal, k.at]),
            [["SIGUSR1", 4000]]
          )
          yield* advance(2000)
          const kills2 = (yield* spawner.kills).filter((k) => k.pid === first!.pid && k.delivered)
          assert.deepStrictEqual(
            kills2.map((k) => [k.signal, k.at]),
            [
              ["SIGUSR1", 4000],
              ["SIGKILL", 6000]
            ]
          )
          const exit = exited(events)[0]!
          assert.strictEqual(exit.reason?._tag, "Unresponsive")
          assert.isTrue(exit.restart)
          assert.isTrue(events.some((e) => e._tag === "Unresponsive" && e.signal === "SIGUSR1" && e.at === 4000))
          // Restarted with the same task id, as a failure: the budget was spent.
          const [, second] = yield* spawner.awaitSpawns(2)
          assert.strictEqual(second!.taskId, 0)
          const status = yield* handle.status
          assert.strictEqual(status[0]!.restarts, 1)
        })
      ).pipe(Effect.scoped)
  )

  it.effect("a command gets SIGABRT as its diagnostic signal", () =>
    withSpawner((spawner) =>
      Effect.gen(function* () {
        yield* started({ ...base, mode: "command", processes: 1, heartbeat: "800 millis" })
        const [first] = yield* spawner.awaitSpawns(1)
        // The default interval: a quarter of the timeout.
        assert.strictEqual(durationMs(first!.request.heartbeat), 200)
        yield* spawner.hang(first!.pid)
        yield* advance(3000)
        assert.deepStrictEqual(
          (yield* spawner.kills).map((k) => k.signal),
          ["SIGABRT", "SIGKILL"]
        )
      })
    ).pipe(Effect.scoped)
  )

  it.effect(
    "the deadline starts once the worker is ready: a silent worker before that is NotReady, not Unresponsive",
    () =>
      withSpawner((spawner) =>
        Effect.gen(function* () {
          const { events } = yield* started({
            ...base,
            processes: 1,
            ready: "message",
            readyTimeout: "5 seconds",
            heartbeat: "1 second"
          })
          const [first] = yield* spawner.awaitSpawns(1)
          yield* spawner.hang(first!.pid)
          yield* advance(4999)
          assert.deepStrictEqual(yield* spawner.kills, [])
          yield* advance(1)
          const exit = exited(events)[0]!
          assert.strictEqual(exit.reason?._tag, "NotReady")
          assert.isFalse((yield* spawner.kills).some((k) => k.signal === "SIGUSR1"))
        })
      ).pipe(Effect.scoped)
  )

  it.effect("unresponsive exits spend the budget: TooManyRestarts carries them", () =>
    withSpawner((spawner) =>
      Effect.gen(function* () {
        const fiber = yield* Effect.forkChild(
          Supervisor.run({ ...base, processes: 1, maxRestarts: 1, heartbeat: "1 second" })
        )
        for (let n = 1; n <= 2; n++) {
          const spawned = yield* spawner.awaitSpawns(n)
          yield* spawner.hang(spawned[n - 1]!.pid)
          yield* advance(3200)
        }
        const exit = yield* Fiber.await(fiber)
        assert.isTrue(Exit.isFailure(exit))
        const error = yield* Effect.flip(Fiber.join(fiber))
        assert.strictEqual(error._tag, "TooManyRestarts")
        if (error._tag !== "TooManyRestarts") return
        assert.deepStrictEqual(
          error.exits.map((e) => e.reason?._tag),
          ["Unresponsive", "Unresponsive"]
        )
        assert.strictEqual((yield* spawner.live).length, 0)
      })
    ).pipe(Effect.scoped)
  )

  /**
   * A worker hangs after its beat at 3000 (timeout 1 s, interval 250 ms), and
   * at 3500 on the test clock something happens to the supervisor's clock.
   * `verdictAt`: when, on the test clock, its diagnostic signal is sent;
   * `told`: the wall reading then, the kill's time.
   */
  const disturbances = [
    {
      name: "the wall clock stepped back 20 s does not delay the verdict: deadlines are on the monotonic clock",
      disturb: (wall: SteppedWall) => wall.step(-20_000),
      // At the deadline, 1000 ms after the last beat; -16000 on the wall clock.
      verdictAt: 4000,
      told: -16_000
    },
    {
      name: "a supervisor stalled for 3 s over a hung worker's deadline finds it after the timeout, the stall and one interval",
      // The monotonic clock jumps 3 s ahead with no timer run: the watch's timer, due at 4000 on the test clock,
      // fires 3000 ms late (7000 monotonic), as after a SIGSTOP. The verdict: 3000 + 1000 + 3000 + 250 = 7250.
      disturb: (wall: SteppedWall) => wall.stall(3000),
      verdictAt: 4250,
      told: 4250
    }
  ]
  for (const { disturb, name, told, verdictAt } of disturbances) {
    it.effect(name, () =>
      Effect.gen(function* () {
        const wall = yield* steppedWall
        yield* withSpawner((spawner) =>
          Effect.gen(function* () {
            yield* started({ ...base, processes: 1, heartbeat: { timeout: "1 second", interval: "250 millis" } })
            const [first] = yield* spawner.awaitSpawns(1)
            yield* wall.advance(3000)
            yield* spawner.hang(first!.pid)
            yield* wall.advance(500)
            yield* disturb(wall)
            yield* wall.advance(verdictAt - 3500 - 1)
            assert.deepStrictEqual(yield* spawner.kills, [], "nothing before the verdict")
            yield* wall.advance(1)
            assert.deepStrictEqual(
              (yield* spawner.kills).map((k) => [k.signal, k.at]),
              [["SIGUSR1", told]]
            )
          })
        ).pipe(Effect.provideService(Clock.Clock, wall.clock))
      }).pipe(Effect.scoped)
    )
  }

  it.effect("the wall clock stepped forward 20 s kills no healthy worker", () =>
    Effect.gen(function* () {
      const wall = yield* steppedWall
      yield* withSpawner((spawner) =>
        Effect.gen(function* () {
          const { events } = yield* started({
            ...base,
            processes: 1,
            heartbeat: { timeout: "1 second", interval: "900 millis" }
          })
          const [first] = yield* spawner.awaitSpawns(1)
          // Beats at 900 and 1800; the watch wakes at 1900 (1000 after the beat at 900): the step comes between.
          yield* wall.advance(1850)
          yield* wall.step(20_000)
          yield* wall.advance(3000)
          assert.deepStrictEqual(yield* spawner.kills, [])
          assert.isFalse(events.some((e) => e._tag === "Unresponsive" || e._tag === "Exited"))
          assert.strictEqual((yield* spawner.process(first!.pid)).heartbeats, 5)
        })
      ).pipe(Effect.provideService(Clock.Clock, wall.clock))
    }).pipe(Effect.scoped)
  )
})

describe("memory", () => {
  it.effect("sampled every memoryInterval; recycled after two samples in a row above the limit, not after one", () =>
    withSpawner(
      (spawner) =>
        Effect.gen(function* () {
          const { events } = yield* started({
            ...base,
            processes: 1,
            maxRestarts: 0,
            maxMemory: "100M",
            memoryInterval: "5 seconds"
          })
          const [first] = yield* spawner.awaitSpawns(1)
          // A spike seen by one sample only (at 5 s) is not a recycle.
          yield* spawner.setMemory(first!.pid, 200 * 2 ** 20)
          yield* advance(5000)
          yield* spawner.setMemory(first!.pid, 10 * 2 ** 20)
          yield* advance(5000)
          assert.isFalse(events.some((e) => e._tag === "Recycling"))
          // Above at 15 s and 20 s: recycled at 20 s.
          yield* spawner.setMemory(first!.pid, 200 * 2 ** 20)
          yield* advance(9999)
          assert.isFalse(events.some((e) => e._tag === "Recycling"))
          yield* advance(1)
          const recycling = events.find((e) => e._tag === "Recycling")
          assert.isDefined(recycling)
          if (recycling?._tag !== "Recycling") return
          assert.strictEqual(recycling.at, 20_000)
          assert.strictEqual(recycling.reason.reason, "memory")
          assert.strictEqual(recycling.reason.rssBytes, 200 * 2 ** 20)
          assert.strictEqual(recycling.reason.limitBytes, 100 * 2 ** 20)
          yield* settle
          // No sockets, module mode: stop, then start (a surge could fight over a port the worker binds).
          const exit = exited(events)[0]!
          assert.strictEqual(exit.reason?._tag, "Recycled")
          assert.isTrue(exit.requested)
          const spawned = yield* spawner.awaitSpawns(2)
          assert.strictEqual(spawned[1]!.taskId, 0)
          assert.isTrue(Option.isSome((yield* spawner.process(first!.pid)).exitStatus))
        }),
      { memory: 10 * 2 ** 20 }
    ).pipe(Effect.scoped)
  )

  it.effect(
    "with owned sockets a recycle is a surge: the replacement is ready before the old worker gets SIGTERM; no budget is spent",
    () =>
      withSpawner(
        (spawner) =>
          Effect.gen(function* () {
            const { events, handle } = yield* started({
              ...base,
              processes: 2,
              maxRestarts: 0,
              ready: "message",
              listen: ["127.0.0.1:0"],
              maxMemory: 1000,
              memoryInterval: "1 second"
            })
            const [a, b] = yield* spawner.awaitSpawns(2)
            yield* spawner.ready(a!.pid)
            yield* spawner.ready(b!.pid)
            yield* advance(2000)
            // Both are above the limit, but they recycle one at a time.
            const third = (yield* spawner.awaitSpawns(3))[2]!
            assert.strictEqual((yield* spawner.processes).length, 3)
            assert.deepStrictEqual(yield* spawner.kills, [], "the old worker serves until the replacement is ready")
            yield* advance(500)
            assert.strictEqual((yield* spawner.processes).length, 3, "the second recycle waits for the first")
            yield* spawner.ready(third.pid)
            yield* settle
            const termed = (yield* spawner.kills).filter((k) => k.signal === "SIGTERM")
            assert.deepStrictEqual(
              termed.map((k) => k.pid),
              [third.taskId === 0 ? a!.pid : b!.pid]
            )
            const fourth = (yield* spawner.awaitSpawns(4))[3]!
            yield* spawner.ready(fourth.pid)
            yield* settle
            const status = yield* handle.status
            assert.deepStrictEqual(
              status.map((s) => s.restarts),
              [0, 0]
            )
            assert.deepStrictEqual(
              exited(events).map((e) => e.reason?._tag),
              ["Recycled", "Recycled"]
            )
          }),
        { memory: 5000 }
      ).pipe(Effect.scoped)
  )
})

describe("lifetime", () => {
  it.effect("each worker recycles within [maxLifetime, maxLifetime + jitter] of being ready, at different times", () =>
    withSpawner((spawner) =>
      Effect.gen(function* () {
        const { events } = yield* started({
          ...base,
          processes: 4,
          listen: ["127.0.0.1:0"],
          ready: "spawn", // a module worker with sockets is otherwise ready when it listens
          maxLifetime: "60 seconds",
          lifetimeJitter: "10 seconds"
        })
        yield* spawner.awaitSpawns(4)
        yield* TestClock.adjust(59_999)
        yield* settle
        assert.isFalse(events.some((e) => e._tag === "Recycling"))
        for (let i = 0; i < 10_001; i += 100) {
          yield* TestClock.adjust(100)
          yield* settle
          // Each recycle is a surge: ready at once ("spawn"), so they complete as they come.
        }
        const recycles = events.filter((e) => e._tag === "Recycling")
        assert.strictEqual(recycles.length, 4)
        for (const r of recycles) {
          if (r._tag !== "Recycling") continue
          assert.strictEqual(r.reason.reason, "lifetime")
          assert.isAtLeast(r.reason.lifetimeMillis!, 60_000)
          assert.isAtMost(r.reason.lifetimeMillis!, 70_000)
        }
        const lifetimes = new Set(recycles.map((r) => (r._tag === "Recycling" ? r.reason.lifetimeMillis : 0)))
        assert.isAbove(lifetimes.size, 1, "the jitter spreads the recycles")
      })
    ).pipe(Effect.scoped)
  )

  it.effect(
    "a recycle whose replacement is not ready in time leaves the old worker serving, and is tried again after readyTimeout",
    () =>
      withSpawner((spawner) =>
        Effect.gen(function* () {
          const { events } = yield* started({
            ...base,
            processes: 1,
            ready: "message",
            readyTimeout: "5 seconds",
            listen: ["127.0.0.1:0"],
            maxLifetime: "10 seconds",
            lifetimeJitter: 0
          })
          const [old] = yield* spawner.awaitSpawns(1)
          yield* spawner.ready(old!.pid)
          yield* advance(10_000)
          // The surge's replacement never says it is ready.
          const second = (yield* spawner.awaitSpawns(2))[1]!
          assert.strictEqual(second.spawnedAt, 10_000)
          yield* advance(5000)
          assert.isTrue(Option.isSome((yield* spawner.process(second.pid)).exitStatus), "the replacement was stopped")
          assert.isTrue(Option.isNone((yield* spawner.process(old!.pid)).exitStatus), "the old worker serves on")
          // Tried again readyTimeout later, and this time the replacement is ready: it takes over.
          yield* advance(5000)
          const third = (yield* spawner.awaitSpawns(3))[2]!
          assert.strictEqual(third.spawnedAt, 20_000)
          yield* spawner.ready(third.pid)
          yield* settle
          assert.isTrue(Option.isSome((yield* spawner.process(old!.pid)).exitStatus))
          assert.strictEqual(exited(events).find((e) => e.pid === old!.pid)?.reason?._tag, "Recycled")
        })
      ).pipe(Effect.scoped)
  )

  for (const step of [0, -20_000]) {
    it.effect(
      `a reload that fails meanwhile does not move the lifetime deadline${step === 0 ? "" : ", nor does the wall clock stepped back 20 s"}`,
      () =>
        Effect.gen(function* () {
          const wall = yield* steppedWall
          yield* withSpawner((spawner) =>
            Effect.gen(function* () {
              const { events, handle } = yield* started({
                ...base,
                processes: 1,
                ready: "message",
                readyTimeout: "2 seconds",
                listen: ["127.0.0.1:0"],
                maxLifetime: "10 seconds",
                lifetimeJitter: 0
              })
              const [old] = yield* spawner.awaitSpawns(1)
              yield* spawner.ready(old!.pid)
              yield* wall.advance(5000)
              yield* wall.step(step)
              // A reload whose replacement is never ready: it fails at 7 s, and the old worker serves on.
              const reload = yield* Effect.forkChild(Effect.flip(handle.reload()))
              yield* wall.advance(2000)
              assert.strictEqual((yield* Fiber.join(reload))._tag, "ReloadFailed")
              yield* wall.advance(2999)
              assert.isFalse(events.some((e) => e._tag === "Recycling"))
              yield* wall.advance(1)
              // 10 s after ready on the monotonic clock; the event's time is the wall clock's.
              assert.strictEqual(events.find((e) => e._tag === "Recycling")?.at, 10_000 + step)
            })
          ).pipe(Effect.provideService(Clock.Clock, wall.clock))
        }).pipe(Effect.scoped)
    )
  }

  it.effect("a recycle takes a warm spare when there is one", () =>
    withSpawner((spawner) =>
      Effect.gen(function* () {
        yield* started({
          ...base,
          processes: 1,
          spares: 1,
          listen: ["127.0.0.1:0"],
          ready: "spawn",
          maxLifetime: "10 seconds",
          lifetimeJitter: 0
        })
        const [, spare] = yield* spawner.awaitSpawns(2)
        assert.isTrue(spare!.spare)
        yield* advance(10_000)
        const taken = yield* spawner.process(spare!.pid)
        assert.deepStrictEqual(taken.activatedAt, Option.some(10_000))
        assert.strictEqual(taken.taskId, 0)
      })
    ).pipe(Effect.scoped)
  )

  it.effect("the default jitter is a tenth of the lifetime", () =>
    Effect.gen(function* () {
      const cfg = yield* Supervisor.config({ ...base, maxLifetime: "1 hour" })
      assert.strictEqual(durationMs(cfg.lifetimeJitter), 360_000)
    })
  )
})

describe("warm spares", () => {
  it.effect(
    "spares boot without a task id; a dead worker's id goes to the oldest spare at once and another boots",
    () =>
      withSpawner((spawner) =>
        Effect.gen(function* () {
          const { events, handle } = yield* started({ ...base, processes: 2, spares: 2 })
          const spawned = yield* spawner.awaitSpawns(4)
          const spares = spawned.filter((p) => p.spare)
          assert.strictEqual(spares.length, 2)
          for (const s of spares) assert.isUndefined(s.request.env["PREFORK_TASK_ID"])
          assert.deepStrictEqual(
            yield* handle.spares,
            spares.map((s) => s.pid)
          )
          const worker = spawned.find((p) => !p.spare && p.taskId === 1)!
          const at = yield* now
          yield* spawner.exit(worker.pid, ExitStatus.exited(1))
          yield* settle
          const taken = yield* spawner.process(spares[0]!.pid)
          assert.strictEqual(taken.taskId, 1)
          assert.deepStrictEqual(taken.activatedAt, Option.some(at), "activated at the moment of the exit, no delay")
          const started1 = events.filter((e) => e._tag === "Started" && e.taskId === 1)
          assert.strictEqual(started1.length, 2)
          assert.deepStrictEqual(started1[1], {
            _tag: "Started",
            taskId: TaskId(1),
            pid: spares[0]!.pid,
            at,
            spare: true
          })
          const fifth = (yield* spawner.awaitSpawns(5))[4]!
          assert.isTrue(fifth.spare)
          assert.deepStrictEqual(yield* handle.spares, [spares[1]!.pid, fifth.pid])
          const status = yield* handle.status
          assert.deepStrictEqual(status[1]!.pid, Option.some(spares[0]!.pid))
        })
      ).pipe(Effect.scoped)
  )

  it.effect("spares die with the supervisor", () =>
    withSpawner((spawner) =>
      Effect.gen(function* () {
        const fiber = yield* Effect.forkChild(Supervisor.run({ ...base, processes: 1, spares: 3 }))
        yield* spawner.awaitSpawns(4)
        yield* Fiber.interrupt(fiber)
        assert.deepStrictEqual(yield* spawner.live, [])
      })
    ).pipe(Effect.scoped)
  )

  it.effect("a reload refreshes the spares: the old ones stop, new ones boot; its surges do not take spares", () =>
    withSpawner((spawner) =>
      Effect.gen(function* () {
        const { events, handle } = yield* started({ ...base, processes: 1, spares: 1 })
        const [, oldSpare] = yield* spawner.awaitSpawns(2)
        assert.isTrue(oldSpare!.spare)
        yield* handle.reload()
        yield* settle
        const all = yield* spawner.processes
        assert.isTrue(Option.isSome(all.find((p) => p.pid === oldSpare!.pid)!.exitStatus))
        assert.isTrue(Option.isNone(all.find((p) => p.pid === oldSpare!.pid)!.activatedAt))
        assert.isTrue(events.some((e) => e._tag === "SpareExited" && e.pid === oldSpare!.pid && e.stopped))
        const live = yield* spawner.live
        assert.deepStrictEqual(live.map((p) => p.spare).sort(), [false, true])
        assert.isFalse(live.some((p) => p.pid === oldSpare!.pid))
      })
    ).pipe(Effect.scoped)
  )

  it.effect(
    "a spare that dies before it is taken is replaced after a backoff, and never counts against the budget",
    () =>
      withSpawner((spawner) =>
        Effect.gen(function* () {
          const { events, handle } = yield* started({ ...base, processes: 1, spares: 1, maxRestarts: 0 })
          const [, spare] = yield* spawner.awaitSpawns(2)
          yield* spawner.exit(spare!.pid, ExitStatus.exited(1))
          yield* settle
          assert.isTrue(events.some((e) => e._tag === "SpareExited" && e.pid === spare!.pid && !e.stopped))
          assert.strictEqual((yield* spawner.processes).length, 2, "the next spare waits for its backoff")
          yield* advance(100)
          assert.strictEqual((yield* spawner.processes).length, 3)
          assert.isTrue((yield* spawner.processes)[2]!.spare)
          assert.strictEqual((yield* handle.status)[0]!.restarts, 0)
        })
      ).pipe(Effect.scoped)
  )
})

describe("spans and metrics", () => {
  it.effect(
    "one span per worker (task id, pid, exit status, reason), one per reload, linked from the workers it starts; restarts counted by reason",
    () => {
      const spans: Array<Tracer.NativeSpan> = []
      const tracer = Tracer.make({
        span: (options) => {
          const span = new Tracer.NativeSpan(options)
          spans.push(span)
          return span
        }
      })
      const count = (reason: Metrics.RestartReason) =>
        Effect.map(Metric.value(Metric.withAttributes(Metrics.restarts, { reason })), (state) => state.count)
      return withSpawner((spawner) =>
        Effect.gen(function* () {
          const before = {
            exit: yield* count("exit"),
            unresponsive: yield* count("unresponsive"),
            reload: yield* count("reload")
          }
          const { handle } = yield* started({ ...base, processes: 1, heartbeat: "1 second" })
          const [first] = yield* spawner.awaitSpawns(1)
          yield* spawner.exit(first!.pid, ExitStatus.exited(3))
          yield* settle
          const [, second] = yield* spawner.awaitSpawns(2)
          yield* spawner.hang(second!.pid)
          yield* advance(3100)
          yield* handle.reload()
          yield* settle
          const workers = spans.filter((s) => s.name === "prefork.worker")
          assert.isAtLeast(workers.length, 3)
          const attributes = (span: Tracer.NativeSpan) => Object.fromEntries(span.attributes)
          assert.deepInclude(attributes(workers[0]!), {
            "prefork.task_id": 0,
            "process.pid": first!.pid,
            "process.exit.code": 3
          })
          assert.deepInclude(attributes(workers[1]!), {
            "process.pid": second!.pid,
            "process.exit.signal": "SIGKILL",
            "prefork.exit.reason": "Unresponsive"
          })
          const reload = spans.find((s) => s.name === "prefork.reload")
          assert.isDefined(reload)
          // The worker the reload started links to the reload's span.
          const last = spans.findLast((s) => s.name === "prefork.worker")!
          assert.strictEqual(last.links[0]?.span, reload)
          assert.strictEqual((yield* count("exit")) - before.exit, 1)
          assert.strictEqual((yield* count("unresponsive")) - before.unresponsive, 1)
          assert.strictEqual((yield* count("reload")) - before.reload, 1)
        })
      ).pipe(Effect.provideService(Tracer.Tracer, tracer), Effect.scoped)
    }
  )
})

describe("the budget gauge", () => {
  it.effect(
    "prefork.restart.budget.remaining: spent by a crash, given back when the restart leaves the intensity window",
    () =>
      withSpawner((spawner) =>
        Effect.gen(function* () {
          const left = Effect.map(Metric.value(Metrics.budgetRemaining), (state) => state.value)
          yield* started({ ...base, processes: 1, intensity: { maxRestarts: 3, within: "10 seconds" } })
          const [first] = yield* spawner.awaitSpawns(1)
          yield* spawner.exit(first!.pid, ExitStatus.exited(1))
          yield* settle
          assert.strictEqual(yield* left, 2)
          yield* TestClock.adjust(9999)
          yield* settle
          assert.strictEqual(yield* left, 2)
          yield* TestClock.adjust(1)
          yield* settle
          assert.strictEqual(yield* left, 3)
        })
      ).pipe(Effect.scoped)
  )
})

describe("options", () => {
  const invalid = (options: Supervisor.Options) =>
    Effect.map(Effect.flip(Supervisor.config(options)), (e: InvalidOptions) => e.field)

  it.effect("bad health options are InvalidOptions naming the field", () =>
    Effect.gen(function* () {
      assert.strictEqual(yield* invalid({ ...base, mode: "command", spares: 1 }), "spares")
      assert.strictEqual(yield* invalid({ ...base, spares: -1 }), "spares")
      assert.strictEqual(yield* invalid({ ...base, spares: 1.5 }), "spares")
      assert.strictEqual(yield* invalid({ ...base, maxMemory: "lots" }), "maxMemory")
      assert.strictEqual(yield* invalid({ ...base, maxMemory: 0 }), "maxMemory")
      assert.strictEqual(yield* invalid({ ...base, maxMemory: "-5M" }), "maxMemory")
      assert.strictEqual(
        yield* invalid({ ...base, heartbeat: { timeout: "1 second", interval: "2 seconds" } }),
        "heartbeat"
      )
      assert.strictEqual(yield* invalid({ ...base, heartbeat: "soon" as never }), "heartbeat.timeout")
      assert.strictEqual(yield* invalid({ ...base, maxLifetime: 0 }), "maxLifetime")
      assert.strictEqual(yield* invalid({ ...base, memoryInterval: 0 }), "memoryInterval")
    })
  )

  it("sizes parse as PM2's max_memory_restart does (powers of 1024)", () => {
    assert.deepStrictEqual(Supervisor.parseBytes("512M"), Option.some(512 * 2 ** 20))
    assert.deepStrictEqual(Supervisor.parseBytes("1.5G"), Option.some(1.5 * 2 ** 30))
    assert.deepStrictEqual(Supervisor.parseBytes("800KiB"), Option.some(800 * 1024))
    assert.deepStrictEqual(Supervisor.parseBytes("4096"), Option.some(4096))
    assert.deepStrictEqual(Supervisor.parseBytes(1e6), Option.some(1e6))
    assert.isTrue(Option.isNone(Supervisor.parseBytes("1.5X")))
    assert.isTrue(Option.isNone(Supervisor.parseBytes(Number.NaN)))
  })
})

const durationMs = (d: Duration.Duration | undefined): number => (d === undefined ? Number.NaN : Duration.toMillis(d))
