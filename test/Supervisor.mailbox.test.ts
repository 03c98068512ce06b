/**
 * Each slot answers every ask of it (issue 17): a recycle pending while an
 * operator's reload of the same slot fails its surge still happens; a
 * `restart` that lands right after a worker is spawned is answered; `scale`
 * racing the shutdown answers, nothing hangs. In-memory spawner, `TestClock`.
 */
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, Layer, Logger, Option, Stream } from "effect"
import type * as Scope from "effect/Scope"
import { TestClock } from "effect/testing"
import * as ExitStatus from "../src/ExitStatus.ts"
import * as Mailbox from "../src/internal/mailbox.ts"
import type { ProcessSpawner } from "../src/ProcessSpawner.ts"
import * as Supervisor from "../src/Supervisor.ts"
import { TaskId } from "../src/TaskId.ts"
import * as TestSpawner from "../src/testing/TestSpawner.ts"

type Control = TestSpawner.TestSpawner["Service"]

const withSpawner = <A, E>(
  body: (spawner: Control) => Effect.Effect<A, E, ProcessSpawner | Scope.Scope>
): Effect.Effect<A, E, Scope.Scope> =>
  Effect.gen(function* () {
    return yield* body(yield* TestSpawner.TestSpawner)
  }).pipe(Effect.provide(Layer.merge(TestSpawner.layer(), Logger.layer([]))))

/** Lets every fiber that can run do so (bounded). */
const settle = Effect.gen(function* () {
  for (let i = 0; i < 50; i++) yield* Effect.yieldNow
})

/** Moves the clock `ms` forward in 100 ms steps, settling after each. */
const advance = (ms: number) =>
  Effect.gen(function* () {
    for (let left = ms; left > 0; left -= 100) {
      yield* TestClock.adjust(Math.min(100, left))
      yield* settle
    }
  })

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

const isLive = (spawner: Control, pid: number) => Effect.map(spawner.process(pid), (p) => Option.isNone(p.exitStatus))

describe("a slot answers every ask of it", () => {
  it.effect("a lifetime recycle pending while an operator reload of the same slot fails its surge still happens", () =>
    withSpawner((spawner) =>
      Effect.gen(function* () {
        const { events, handle } = yield* started({
          command: "worker",
          mode: "module",
          processes: 2,
          ready: "message",
          readyTimeout: "3 seconds",
          listen: ["127.0.0.1:0"],
          maxLifetime: "10 seconds",
          lifetimeJitter: 0
        })
        const [w0, w1] = yield* spawner.awaitSpawns(2)
        yield* spawner.ready(w0!.pid)
        yield* spawner.ready(w1!.pid)
        yield* settle
        // Both lifetimes end at 10 s: slot 0's recycle goes first (a surge), slot 1's waits its turn.
        yield* advance(10_000)
        assert.strictEqual(events.filter((e) => e._tag === "Recycling").length, 2)
        const surge0 = (yield* spawner.awaitSpawns(3))[2]!
        assert.strictEqual(surge0.taskId, 0)
        // An operator's reload asks both slots now; slot 1's replacement will never be ready.
        const reload = yield* Effect.forkChild(Effect.exit(handle.reload({ concurrency: 2 })))
        yield* settle
        const surge1 = (yield* spawner.awaitSpawns(4))[3]!
        assert.strictEqual(surge1.taskId, 1)
        // Slot 0's recycle completes: its turn ends, slot 1's recycle is next.
        yield* spawner.ready(surge0.pid)
        yield* advance(200)
        assert.isFalse(yield* isLive(spawner, w0!.pid))
        // Slot 1's reload surge is not ready in time: the reload fails, w1 serves on.
        yield* advance(3000)
        const reloaded = yield* Fiber.join(reload)
        assert.isTrue(Exit.isFailure(reloaded), "the reload failed")
        assert.isTrue(yield* isLive(spawner, w1!.pid))
        // The recycle of w1 was still pending: it happens now (a surge whose replacement is ready at once).
        for (let i = 0; i < 20 && (yield* isLive(spawner, w1!.pid)); i++) {
          for (const p of yield* spawner.live) if (p.taskId === 1 && p.pid !== w1!.pid) yield* spawner.ready(p.pid)
          yield* advance(500)
        }
        assert.isFalse(yield* isLive(spawner, w1!.pid), "the recycle of slot 1 was lost")
        const exit1 = events.find((e) => e._tag === "Exited" && e.pid === w1!.pid)
        assert.strictEqual(exit1?._tag === "Exited" ? exit1.reason?._tag : undefined, "Recycled")
      })
    ).pipe(Effect.scoped)
  )

  it.effect("a restart asked while a recycle's surge runs is answered by it: one replacement, both answered", () =>
    withSpawner((spawner) =>
      Effect.gen(function* () {
        const { handle } = yield* started({
          command: "worker",
          mode: "module",
          processes: 1,
          ready: "message",
          listen: ["127.0.0.1:0"],
          maxLifetime: "10 seconds",
          lifetimeJitter: 0
        })
        const [old] = yield* spawner.awaitSpawns(1)
        yield* spawner.ready(old!.pid)
        yield* advance(10_000)
        const next = (yield* spawner.awaitSpawns(2))[1]!
        // The recycle's replacement is not ready yet: a restart now waits for it, it does not start another.
        const restart = yield* Effect.forkChild(handle.restart(TaskId(0)))
        yield* advance(1000)
        assert.isUndefined(restart.pollUnsafe())
        yield* spawner.ready(next.pid)
        yield* advance(200)
        assert.isDefined(restart.pollUnsafe(), "the restart was not answered")
        assert.isFalse(yield* isLive(spawner, old!.pid))
        assert.isTrue(yield* isLive(spawner, next.pid), "the restart replaced the recycle's replacement too")
        assert.strictEqual((yield* spawner.processes).length, 2)
      })
    ).pipe(Effect.scoped)
  )

  it.effect("a restart asked the moment a worker is started is answered once its replacement runs", () =>
    withSpawner((spawner) =>
      Effect.gen(function* () {
        const { events, handle } = yield* started({
          command: "worker",
          processes: 1,
          maxRestarts: 5
        })
        const [first] = yield* spawner.awaitSpawns(1)
        // A crash: restarted at once. A restart is asked as soon as the next worker is told Started.
        const restarted = yield* handle.events.pipe(
          Stream.filter((e) => e._tag === "Started" && e.pid !== first!.pid),
          Stream.runHead,
          Effect.andThen(handle.restart(TaskId(0))),
          Effect.forkChild
        )
        yield* settle
        yield* spawner.exit(first!.pid, ExitStatus.exited(1))
        for (let i = 0; i < 20 && restarted.pollUnsafe() === undefined; i++) yield* advance(500)
        assert.isDefined(restarted.pollUnsafe(), "the restart still waits")
        const status = yield* handle.status
        assert.strictEqual(status[0]!.state, "running")
        assert.isTrue(events.filter((e) => e._tag === "Started").length >= 2)
      })
    ).pipe(Effect.scoped)
  )

  it.effect("scale racing the shutdown answers or fails typed; nothing hangs and nothing spawns after the stop", () =>
    withSpawner((spawner) =>
      Effect.gen(function* () {
        for (const to of [1, 4]) {
          const { handle } = yield* started({ command: "worker", processes: 2, stopTimeout: "1 second" })
          yield* spawner.awaitSpawns(2)
          const scaling = yield* Effect.forkChild(Effect.exit(handle.scale(to)))
          const stopping = yield* Effect.forkChild(handle.stop)
          for (let i = 0; i < 10 && (scaling.pollUnsafe() === undefined || stopping.pollUnsafe() === undefined); i++) {
            yield* advance(1000)
          }
          assert.isDefined(stopping.pollUnsafe(), "the stop hangs")
          assert.isDefined(scaling.pollUnsafe(), "the scale hangs")
          const spawned = (yield* spawner.processes).length
          yield* advance(2000)
          assert.strictEqual((yield* spawner.processes).length, spawned, "spawned after the stop")
          assert.deepStrictEqual(yield* spawner.live, [])
        }
      })
    ).pipe(Effect.scoped)
  )
})

describe("mailbox.ts", () => {
  const about = (incarnation: number, by: Mailbox.Intent["by"] = "restart") =>
    Mailbox.intent({ by, how: "replace", incarnation })

  it.effect(
    "an intent waits for a newer worker; a recycle's reason goes with its worker; closing answers the rest Gone",
    () =>
      Effect.gen(function* () {
        const mailbox = yield* Mailbox.make()
        const restart = about(1)
        const recycle = about(1, "recycle")
        const later = about(2)
        const answers = yield* Effect.forkChild(
          Effect.all([Mailbox.ask(mailbox, restart), Mailbox.ask(mailbox, recycle), Mailbox.ask(mailbox, later)], {
            concurrency: "unbounded"
          })
        )
        yield* settle
        // Worker 1 ends (it exited): the restart waits for the next worker, the recycle is answered now.
        yield* Mailbox.ended(mailbox, 1, "exit")
        assert.isTrue(Deferred.isDoneUnsafe(recycle.reply))
        assert.isFalse(Deferred.isDoneUnsafe(restart.reply))
        yield* Mailbox.running(mailbox)
        assert.isTrue(Deferred.isDoneUnsafe(restart.reply))
        // The intent about worker 2 is still there; the slot ends: it is answered Gone, and so is any ask after.
        assert.isFalse(Deferred.isDoneUnsafe(later.reply))
        yield* Mailbox.close(mailbox)
        assert.deepStrictEqual(yield* Fiber.join(answers), [
          { _tag: "Superseded", by: "exit" },
          { _tag: "Superseded", by: "exit" },
          { _tag: "Gone" }
        ])
        assert.deepStrictEqual(yield* Mailbox.ask(mailbox, about(3)), { _tag: "Gone" })
      })
  )

  it.effect("an intent is answered once: a second answer is a defect, not a silent drop", () =>
    Effect.gen(function* () {
      const intent = about(1)
      yield* Mailbox.answer(intent, Exit.succeed({ _tag: "Done" }))
      const again = yield* Effect.exit(Mailbox.answer(intent, Exit.succeed({ _tag: "Gone" })))
      assert.isTrue(Exit.hasDies(again))
      assert.deepStrictEqual(yield* Deferred.await(intent.reply), { _tag: "Done" })
    })
  )

  it.effect("`arrived` keeps the intent it waited for: whoever wins the race, the slot takes it next", () =>
    Effect.gen(function* () {
      const mailbox = yield* Mailbox.make()
      const intent = about(1)
      yield* Effect.forkChild(Mailbox.ask(mailbox, intent))
      yield* settle
      yield* Mailbox.arrived(mailbox)
      yield* Mailbox.arrived(mailbox)
      assert.strictEqual(Mailbox.next(mailbox), intent)
      assert.isUndefined(Mailbox.next(mailbox))
    })
  )
})
