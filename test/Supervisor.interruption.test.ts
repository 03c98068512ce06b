/**
 * Interruption, at every point where a caller or the supervisor can be cut
 * short (FAULTS rows 33 and 38), on the in-memory spawner under `TestClock`.
 * Several of these began as counterexamples the property tests shrank.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Layer, Logger, Option, Stream } from "effect"
import * as Scope from "effect/Scope"
import { TestClock } from "effect/testing"
import * as ExitStatus from "../src/ExitStatus.ts"
import type * as Model from "../src/Model.ts"
import type { ProcessSpawner } from "../src/ProcessSpawner.ts"
import * as Supervisor from "../src/Supervisor.ts"
import { TaskId } from "../src/TaskId.ts"
import * as TestSpawner from "../src/testing/TestSpawner.ts"

const settle = Effect.gen(function* () {
  for (let i = 0; i < 40; i++) yield* Effect.yieldNow
})

const base = { command: "worker", stopTimeout: "2 seconds" } as const

const withSpawner = <A, E>(
  body: (
    spawner: TestSpawner.TestSpawner["Service"]
  ) => Effect.Effect<A, E, Scope.Scope | TestSpawner.TestSpawner | ProcessSpawner>
) =>
  Effect.gen(function* () {
    const spawner = yield* TestSpawner.TestSpawner
    return yield* body(spawner)
  }).pipe(Effect.provide(Layer.merge(TestSpawner.layer(), Logger.layer([]))))

/** A supervisor started in a scope of the test's, with its events collected. */
const start = (options: Omit<Supervisor.Options, "command">) =>
  Effect.gen(function* () {
    const handle = yield* Supervisor.start({ ...base, ...options })
    const events: Array<Model.Event> = []
    yield* Effect.forkScoped(Stream.runForEach(handle.events, (e) => Effect.sync(() => events.push(e))))
    yield* settle
    return { handle, events }
  })

const stoppedEvents = (events: ReadonlyArray<Model.Event>) =>
  events.flatMap((e) => (e._tag === "Exited" && e.stopped === true ? [e.taskId as number] : []))

describe("interruption (in-memory spawner, TestClock)", () => {
  it.effect(
    "row 33: interrupting the supervisor while it stops a worker not ready in time: SIGKILL at the deadline, then it returns",
    () =>
      withSpawner((spawner) =>
        Effect.gen(function* () {
          yield* spawner.setSignalDefault("SIGTERM", "ignore")
          const fiber = yield* Effect.forkChild(
            Supervisor.run({ ...base, mode: "module", processes: 1, ready: "message", readyTimeout: "1 second" })
          )
          yield* spawner.awaitSpawns(1)
          yield* settle
          yield* TestClock.adjust("1 second") // not ready: the stop begins, SIGTERM ignored
          yield* settle
          const interrupting = yield* Effect.forkChild(Fiber.interrupt(fiber))
          yield* settle
          // The interruption waits for the stop under way: the worker lives, the supervisor has not returned.
          assert.isUndefined(interrupting.pollUnsafe())
          assert.strictEqual((yield* spawner.live).length, 1)
          yield* TestClock.adjust("2 seconds")
          yield* Fiber.join(interrupting)
          assert.deepStrictEqual((yield* spawner.live).length, 0)
          assert.deepStrictEqual(
            (yield* spawner.process(1000)).signals.map((s) => [s.signal, s.at]),
            [
              ["SIGTERM", 1000],
              ["SIGKILL", 3000]
            ]
          )
          assert.isTrue(Exit.hasInterrupts(yield* Fiber.await(fiber)))
        })
      )
  )

  it.effect("row 33: interrupting a restart() caller does not abandon the stop it began", () =>
    withSpawner((spawner) =>
      Effect.gen(function* () {
        const { handle } = yield* start({ processes: 1 })
        yield* spawner.onSignal(1000, "SIGTERM", "ignore")
        const restarting = yield* Effect.forkChild(handle.restart(TaskId(0)))
        yield* settle
        yield* Fiber.interrupt(restarting)
        yield* TestClock.adjust("2 seconds")
        yield* settle
        // The old worker got SIGKILL at the deadline and a replacement runs under the same task id.
        assert.deepStrictEqual(
          (yield* spawner.process(1000)).signals.map((s) => s.signal),
          ["SIGTERM", "SIGKILL"]
        )
        const live = yield* spawner.live
        assert.deepStrictEqual(
          live.map((p) => [p.pid, p.taskId as number]),
          [[1001, 0]]
        )
        // And a later restart works as if nothing happened.
        yield* handle.restart(TaskId(0))
        assert.deepStrictEqual(
          (yield* spawner.live).map((p) => p.pid),
          [1002]
        )
      })
    )
  )

  it.effect("row 38: an interrupted scale-down still removes its slots; a later scale and awaitReady work", () =>
    withSpawner((spawner) =>
      Effect.gen(function* () {
        const { events, handle } = yield* start({ processes: 3 })
        yield* spawner.onSignal(1002, "SIGTERM", "ignore")
        const scaling = yield* Effect.forkChild(handle.scale(1))
        yield* settle
        // Slot 1 is gone, slot 2 still stopping: the live ids below `processes` are 0 … n-1.
        assert.strictEqual(handle.processes, 1)
        assert.deepStrictEqual(
          (yield* handle.status).map((s) => [s.taskId as number, s.state]),
          [
            [0, "running"],
            [2, "stopping"]
          ]
        )
        yield* Fiber.interrupt(scaling)
        yield* TestClock.adjust("2 seconds")
        yield* settle
        assert.deepStrictEqual(
          (yield* handle.status).map((s) => [s.taskId as number, s.state]),
          [[0, "running"]]
        )
        yield* handle.scale(2)
        yield* handle.awaitReady
        assert.deepStrictEqual(
          (yield* spawner.live).map((p) => [p.pid, p.taskId as number]),
          [
            [1000, 0],
            [1003, 1]
          ]
        )
        assert.deepStrictEqual(stoppedEvents(events).sort(), [1, 2])
      })
    )
  )

  it.effect("row 38: scaling up while slots are still leaving waits for them, then reuses their task ids", () =>
    withSpawner((spawner) =>
      Effect.gen(function* () {
        const { handle } = yield* start({ processes: 2 })
        yield* spawner.onSignal(1001, "SIGTERM", "ignore")
        const down = yield* Effect.forkChild(handle.scale(1))
        yield* settle
        yield* Fiber.interrupt(down)
        const up = yield* Effect.forkChild(handle.scale(2))
        yield* settle
        // Never two workers with task id 1.
        assert.deepStrictEqual(
          (yield* spawner.live).map((p) => p.taskId as number),
          [0, 1]
        )
        assert.isUndefined(up.pollUnsafe())
        yield* TestClock.adjust("2 seconds")
        yield* Fiber.join(up)
        assert.deepStrictEqual(
          (yield* spawner.live).map((p) => [p.pid, p.taskId as number]),
          [
            [1000, 0],
            [1002, 1]
          ]
        )
      })
    )
  )

  it.effect(
    "row 38: an interrupted awaitReady and reload leave nothing waiting; status follows every exit at once",
    () =>
      withSpawner((spawner) =>
        Effect.gen(function* () {
          const { handle } = yield* start({ processes: 2, mode: "module", ready: "message" })
          const waiting = yield* Effect.forkChild(handle.awaitReady)
          yield* settle
          yield* Fiber.interrupt(waiting)
          yield* spawner.ready(1000)
          yield* spawner.ready(1001)
          yield* settle
          yield* handle.awaitReady
          const reloading = yield* Effect.forkChild(handle.reload({ surge: false }))
          yield* settle
          yield* Fiber.interrupt(reloading)
          // The first slot's replacement was started; the reload went no further.
          yield* spawner.ready(1002)
          yield* settle
          assert.deepStrictEqual(
            (yield* spawner.live).map((p) => [p.pid, p.taskId as number]),
            [
              [1001, 1],
              [1002, 0]
            ]
          )
          // A reaped worker is never shown running.
          yield* spawner.exit(1001, ExitStatus.exited(3))
          const slot = (yield* handle.status)[1]!
          assert.notStrictEqual(slot.state, "running")
          assert.isTrue(Option.isNone(slot.pid) || slot.pid.value !== 1001)
        })
      )
  )

  it.effect("the supervisor interrupted right after it starts logs its stop and stops every worker it spawned", () =>
    withSpawner((spawner) =>
      Effect.gen(function* () {
        const fiber = yield* Effect.forkChild(Supervisor.run({ ...base, processes: 3 }))
        yield* spawner.awaitSpawns(3)
        yield* Fiber.interrupt(fiber)
        assert.deepStrictEqual(yield* spawner.live, [])
        assert.strictEqual((yield* spawner.processes).length, 3)
      })
    )
  )

  it.effect("a shutdown tells each stopped worker as an Exited event with stopped: true", () =>
    withSpawner((spawner) =>
      Effect.gen(function* () {
        const scope = yield* Scope.make()
        const { events, handle } = yield* start({ processes: 2 }).pipe(Scope.provide(scope))
        yield* handle.stop
        yield* settle
        assert.deepStrictEqual(stoppedEvents(events).sort(), [0, 1])
        assert.deepStrictEqual(
          (yield* handle.status).map((s) => s.state),
          ["stopped", "stopped"]
        )
        assert.deepStrictEqual(yield* spawner.live, [])
        yield* Scope.close(scope, Exit.void)
      })
    )
  )

  it.effect(
    "a surge reload: each replacement starts beside the live worker and takes over once ready; reload returns then",
    () =>
      withSpawner((spawner) =>
        Effect.gen(function* () {
          const { events, handle } = yield* start({ processes: 2, mode: "module", ready: "message" })
          yield* spawner.ready(1000)
          yield* spawner.ready(1001)
          yield* handle.awaitReady
          const reloading = yield* Effect.forkChild(handle.reload())
          yield* settle
          // The replacement of slot 0 runs beside the old worker, which still serves.
          assert.deepStrictEqual(
            (yield* spawner.live).map((p) => [p.pid, p.taskId as number]),
            [
              [1000, 0],
              [1001, 1],
              [1002, 0]
            ]
          )
          const slot0 = (yield* handle.status)[0]!
          assert.deepStrictEqual([slot0.pid, slot0.replacement], [Option.some(1000), Option.some(1002)])
          yield* spawner.ready(1002)
          yield* settle
          yield* spawner.ready(1003)
          yield* Fiber.join(reloading)
          assert.deepStrictEqual(
            (yield* spawner.live).map((p) => [p.pid, p.taskId as number]),
            [
              [1002, 0],
              [1003, 1]
            ]
          )
          yield* settle
          assert.deepStrictEqual(
            events
              .filter((e) => e._tag !== "Listening" && e._tag !== "Finished")
              .slice(4)
              .map((e) => `${e._tag} ${"pid" in e ? e.pid : ""}`),
            ["Started 1002", "Ready 1002", "Exited 1000", "Started 1003", "Ready 1003", "Exited 1001"]
          )
          assert.strictEqual((yield* handle.status).filter((s) => s.restarts > 0).length, 0)
        })
      )
  )

  it.effect(
    "a surge whose replacement is not ready in time: ReloadFailed, the replacement stopped, the old worker kept",
    () =>
      withSpawner((spawner) =>
        Effect.gen(function* () {
          const { handle } = yield* start({ processes: 2, mode: "module", ready: "message", readyTimeout: "3 seconds" })
          yield* spawner.ready(1000)
          yield* spawner.ready(1001)
          yield* handle.awaitReady
          const reloading = yield* Effect.forkChild(handle.reload())
          yield* settle
          yield* TestClock.adjust("3 seconds")
          const error = yield* Effect.flip(Fiber.join(reloading))
          assert.strictEqual(error._tag, "ReloadFailed")
          if (error._tag === "ReloadFailed") assert.deepStrictEqual([error.taskId, error.pid], [0, 1002])
          assert.deepStrictEqual(
            (yield* spawner.live).map((p) => p.pid),
            [1000, 1001]
          )
          assert.isTrue(Option.isNone((yield* handle.status)[0]!.replacement))
        })
      )
  )
})
