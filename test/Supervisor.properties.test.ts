/**
 * Property-based tests of the supervision loop: random interleavings of
 * faults (crash, kill, normal exit, a worker that ignores SIGTERM, readiness)
 * and handle calls (`restart`, `scale`, `reload`, `awaitReady`, each possibly
 * interrupted half-way), ended by a stop, the supervisor's interruption, or
 * the workers finishing, all on the in-memory spawner under `TestClock`.
 *
 * After every step and at the end, the invariants a supervisor owes:
 * - at most one live worker per task slot, and `status` names exactly the live workers;
 * - once the supervisor returns, for any reason, no process is live;
 * - every process has exactly one `Started` and one `Exited` event;
 * - the budget is spent exactly as Tornado counts: one per restart of an
 *   abnormal exit, none for requested restarts or exits while stopping;
 * - every handle call has returned (no waiter left behind), and truthfully: a `restart` or a
 *   `reload` that returns while the supervisor runs has replaced the worker it found (or that
 *   slot has ended);
 * - a recycle asked is never lost: given ready replacements and time, the worker it was for is
 *   gone (recycled, or replaced for another reason);
 * - with health on: spares are never workers (no task id, not in `status`) until a slot takes one, and die
 *   with the supervisor; hung workers spend the budget, recycles never do.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Layer, Logger, Option, Schema, Scope, Stream } from "effect"
import { TestClock } from "effect/testing"
import * as ExitStatus from "../src/ExitStatus.ts"
import type * as Model from "../src/Model.ts"
import * as Supervisor from "../src/Supervisor.ts"
import * as TestSpawner from "../src/testing/TestSpawner.ts"

const Slot = Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 4 }))
const Step = Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 3 }))

/** One thing that happens to the supervisor. `cut` says after how many settles a handle call is interrupted (0: never). */
const Op = Schema.Union([
  // `newest`: during a surge reload, the replacement rather than the worker it would replace.
  Schema.TaggedStruct("Crash", {
    slot: Slot,
    newest: Schema.Boolean,
    code: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 3 }))
  }),
  Schema.TaggedStruct("Kill", { slot: Slot, newest: Schema.Boolean }),
  Schema.TaggedStruct("ExitZero", { slot: Slot }),
  Schema.TaggedStruct("IgnoreTerm", { slot: Slot }),
  Schema.TaggedStruct("Ready", { slot: Slot }),
  Schema.TaggedStruct("Advance", { millis: Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 3000 })) }),
  Schema.TaggedStruct("Restart", { slot: Slot, cut: Step }),
  Schema.TaggedStruct("Scale", { to: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 5 })), cut: Step }),
  Schema.TaggedStruct("Reload", {
    cut: Step,
    surge: Schema.Boolean,
    concurrency: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 3 }))
  }),
  Schema.TaggedStruct("AwaitReady", { cut: Step }),
  // With `health`: a worker's event loop blocks (no more heartbeats), its memory grows or shrinks, a spare dies.
  Schema.TaggedStruct("Hang", { slot: Slot }),
  Schema.TaggedStruct("Memory", { slot: Slot, high: Schema.Boolean }),
  Schema.TaggedStruct("SpareDies", { code: Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 2 })) })
])
type Op = typeof Op.Type

/** The operations that matter most with health on, so that random runs reach unresponsive workers, recycles and spares often. */
const HealthOp = Schema.Union([
  Schema.TaggedStruct("Hang", { slot: Slot }),
  Schema.TaggedStruct("Memory", { slot: Slot, high: Schema.Boolean }),
  Schema.TaggedStruct("SpareDies", { code: Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 2 })) }),
  Schema.TaggedStruct("Advance", { millis: Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 3000 })) }),
  Schema.TaggedStruct("Advance", { millis: Schema.Int.check(Schema.isBetween({ minimum: 1000, maximum: 3000 })) }),
  Schema.TaggedStruct("Crash", {
    slot: Slot,
    newest: Schema.Boolean,
    code: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 3 }))
  }),
  Schema.TaggedStruct("Ready", { slot: Slot }),
  Schema.TaggedStruct("Ready", { slot: Slot }),
  Schema.TaggedStruct("Restart", { slot: Slot, cut: Step }),
  Schema.TaggedStruct("Scale", { to: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 5 })), cut: Step }),
  Schema.TaggedStruct("Reload", {
    cut: Step,
    surge: Schema.Boolean,
    concurrency: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 3 }))
  })
])

const Scenario = Schema.Struct({
  processes: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 4 })),
  maxRestarts: Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 6 })),
  readyMessage: Schema.Boolean,
  listen: Schema.Boolean,
  /** Heartbeats, memory and lifetime recycling; and with `readyMessage` (module mode), this many warm spares. */
  health: Schema.Boolean,
  spares: Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 2 })),
  ops: Schema.Array(Op).check(Schema.isMinLength(8), Schema.isMaxLength(24)),
  ending: Schema.Literals(["stop", "interrupt", "finish"])
})
type Scenario = typeof Scenario.Type

const HealthScenario = Schema.Struct({
  processes: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 4 })),
  maxRestarts: Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 6 })),
  readyMessage: Schema.Boolean,
  listen: Schema.Boolean,
  health: Schema.Literal(true),
  spares: Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 2 })),
  ops: Schema.Array(HealthOp).check(Schema.isMinLength(14), Schema.isMaxLength(30)),
  ending: Schema.Literals(["stop", "interrupt", "finish"])
})

const STOP_TIMEOUT = 2000

/** Lets every fiber that can run do so (bounded). */
const settle = Effect.gen(function* () {
  for (let i = 0; i < 40; i++) yield* Effect.yieldNow
})

type Control = TestSpawner.TestSpawner["Service"]

/** A spare not yet given a task id: not a worker. */
const idleSpare = (p: TestSpawner.TestProcess) => p.spare && Option.isNone(p.activatedAt)

/** The live workers: every live process but the idle spares. */
const workers = (spawner: Control) => Effect.map(spawner.live, (live) => live.filter((p) => !idleSpare(p)))

const liveOf = (spawner: Control, slot: number) =>
  Effect.map(workers(spawner), (live) => live.find((p) => p.taskId === slot))

/**
 * At most one live worker per slot, two during a surge reload (the second its
 * `replacement`); `status` names exactly the live workers, each under its own task id.
 */
const checkConsistent = (spawner: Control, handle: Supervisor.SupervisorHandle, where: string) =>
  Effect.gen(function* () {
    const live = yield* workers(spawner)
    const spares = (yield* spawner.live).filter(idleSpare)
    assert.deepStrictEqual(
      yield* handle.spares,
      spares.map((p) => p.pid),
      `${where}: the spares and the idle spare processes differ`
    )
    const status = yield* handle.status
    const named = status.flatMap((s) => [
      ...(Option.isSome(s.pid) ? [[s.taskId as number, s.pid.value] as const] : []),
      ...(Option.isSome(s.replacement) ? [[s.taskId as number, s.replacement.value] as const] : [])
    ])
    assert.deepStrictEqual(
      named.map(([, pid]) => pid).sort(),
      live.map((p) => p.pid).sort(),
      `${where}: status and the live processes differ`
    )
    for (const s of status) {
      const mine = live.filter((p) => p.taskId === s.taskId).length
      assert.isAtMost(
        mine,
        Option.isSome(s.replacement) ? 2 : 1,
        `${where}: too many live workers for task ${s.taskId}`
      )
    }
    // Task ids stay 0 … n-1; any slot past `processes` is one being scaled away, still stopping.
    assert.deepStrictEqual(
      status.filter((s) => s.taskId < handle.processes).map((s) => s.taskId as number),
      Array.from({ length: handle.processes }, (_, i) => i),
      `${where}: task ids are not 0 … n-1`
    )
    for (const s of status.filter((s) => s.taskId >= handle.processes)) {
      assert.strictEqual(s.state, "stopping", `${where}: slot ${s.taskId}`)
    }
    for (const [taskId, pid] of named) {
      assert.strictEqual(live.find((p) => p.pid === pid)?.taskId, taskId, `${where}: pid ${pid} under task ${taskId}`)
    }
  })

const runScenario = (scenario: Scenario) =>
  Effect.gen(function* () {
    const spawner = yield* TestSpawner.TestSpawner
    const scope = yield* Scope.make()
    const handle = yield* Supervisor.start({
      command: "worker",
      processes: scenario.processes,
      maxRestarts: scenario.maxRestarts,
      stopTimeout: STOP_TIMEOUT,
      ready: scenario.readyMessage ? "message" : "spawn",
      readyTimeout: "4 seconds",
      mode: scenario.readyMessage ? "module" : "command",
      ...(scenario.listen ? { listen: ["127.0.0.1:0", "unix:/run/app.sock"] } : {}),
      ...(scenario.health
        ? {
            heartbeat: "1 second",
            maxMemory: "100M",
            memoryInterval: "1 second",
            maxLifetime: "5 seconds",
            spares: scenario.readyMessage ? scenario.spares : 0
          }
        : {})
    }).pipe(Scope.provide(scope))
    const collector = yield* Effect.forkChild(Stream.runCollect(handle.events))
    /** The events so far, as they come. */
    const seen: Array<Model.Event> = []
    yield* Effect.forkChild(Stream.runForEach(handle.events, (e) => Effect.sync(() => seen.push(e))))
    const result = yield* Effect.forkChild(handle.await)
    yield* settle
    const calls: Array<Fiber.Fiber<unknown, unknown>> = []
    /** Abnormal exits the test caused itself: the budget can be spent on these and on workers not ready in time. */
    let faults = 0
    /** Answers that were not true when they came. */
    const untruths: Array<string> = []

    /**
     * Checks, the moment a `restart` or `reload` returns, that each worker it
     * found (task id, pid) is gone: replaced as asked, or superseded. Unless
     * the supervision is ending or that slot has ended (the answer is then "gone").
     */
    const truthful = (what: string, found: ReadonlyArray<readonly [number, number]>) =>
      Effect.gen(function* () {
        if (result.pollUnsafe() !== undefined) return
        const status = yield* handle.status
        if (status.some((s) => s.taskId < handle.processes && s.state === "stopping")) return
        for (const [taskId, pid] of found) {
          const slot = status.find((s) => s.taskId === taskId)
          if (slot === undefined || taskId >= handle.processes || slot.state === "exited" || slot.state === "stopped")
            continue
          if (Option.isNone((yield* spawner.process(pid)).exitStatus)) {
            // "Gone" is the truth when the supervision had begun to end as it answered: its slots say so next.
            yield* settle
            const closing = (yield* handle.status).some((s) => s.state === "stopping")
            if (!closing && result.pollUnsafe() === undefined) {
              untruths.push(`${what} returned while pid ${pid} of task ${taskId} still runs`)
            }
          }
        }
      })

    /** The worker of each slot now (not a surge's replacement): what a restart or reload asked about. */
    const found = (only?: number) =>
      Effect.map(handle.status, (status) =>
        status.flatMap((s) =>
          Option.isSome(s.pid) && (only === undefined || s.taskId === only)
            ? [[s.taskId as number, s.pid.value] as const]
            : []
        )
      )

    const call = (effect: Effect.Effect<unknown, unknown>, cut: number) =>
      Effect.gen(function* () {
        const fiber = yield* Effect.forkChild(effect)
        if (cut === 0) {
          calls.push(fiber)
          return
        }
        for (let i = 0; i < cut; i++) yield* settle
        yield* Fiber.interrupt(fiber)
      })

    const step = (op: Op) =>
      Effect.gen(function* () {
        switch (op._tag) {
          case "Hang": {
            const p = yield* liveOf(spawner, op.slot)
            if (p !== undefined && !p.hung) {
              if (scenario.health) faults++
              yield* spawner.hang(p.pid)
            }
            return
          }
          case "Memory": {
            const p = yield* liveOf(spawner, op.slot)
            if (p !== undefined) yield* spawner.setMemory(p.pid, op.high ? 200 * 2 ** 20 : 10 * 2 ** 20)
            return
          }
          case "SpareDies": {
            const p = (yield* spawner.live).find(idleSpare)
            if (p !== undefined) yield* spawner.exit(p.pid, ExitStatus.exited(op.code))
            return
          }
          case "Crash":
          case "Kill":
          case "ExitZero": {
            const mine = (yield* workers(spawner)).filter((p) => p.taskId === op.slot)
            const p = op._tag !== "ExitZero" && op.newest ? mine.at(-1) : mine[0]
            if (p === undefined) return
            if (op._tag !== "ExitZero") faults++
            const status =
              op._tag === "Crash"
                ? ExitStatus.exited(op.code)
                : op._tag === "Kill"
                  ? ExitStatus.signaled("SIGKILL")
                  : ExitStatus.exited(0)
            return yield* spawner.exit(p.pid, status)
          }
          case "IgnoreTerm": {
            const p = yield* liveOf(spawner, op.slot)
            if (p !== undefined) yield* spawner.onSignal(p.pid, "SIGTERM", "ignore")
            return
          }
          case "Ready": {
            // Every live worker of the slot: the old one and, during a surge, its replacement.
            for (const p of yield* workers(spawner)) if (p.taskId === op.slot) yield* spawner.ready(p.pid)
            return
          }
          case "Advance": {
            // In steps, as real time passes: timers that re-arm (heartbeats, samples) fire again within one advance.
            for (let left = op.millis; left > 0; left -= 250) {
              yield* TestClock.adjust(Math.min(250, left))
              yield* settle
            }
            return
          }
          case "Restart": {
            const before = (yield* liveOf(spawner, op.slot))?.pid
            const taskId = op.slot as Model.SlotStatus["taskId"]
            if (op.cut !== 0 || before === undefined) return yield* call(handle.restart(taskId), op.cut)
            // A restart during a surge reload joins it: the worker is already being replaced.
            const surging = Option.isSome(
              (yield* handle.status).find((s) => s.taskId === op.slot)?.replacement ?? Option.none()
            )
            const asked = yield* found(op.slot)
            const fiber = yield* Effect.forkChild(
              Effect.tap(handle.restart(taskId), () => truthful(`restart(${op.slot})`, asked))
            )
            calls.push(fiber)
            yield* settle
            // While the supervisor runs, a restart stops the worker it found at once (SIGTERM), whatever the worker does then.
            const tb = yield* handle.status
            const slot = tb.find((s) => s.taskId === op.slot)
            if (!surging && result.pollUnsafe() === undefined && slot !== undefined && slot.state !== "stopping") {
              const old = yield* spawner.process(before)
              assert.isTrue(
                // An unresponsive worker being killed (its diagnostic signal sent) joins that kill instead.
                Option.isSome(old.exitStatus) ||
                  old.signals.some((r) => r.signal === "SIGTERM" || r.signal === "SIGABRT" || r.signal === "SIGUSR1"),
                "restart left the worker alone"
              )
            }
            return
          }
          case "Scale": {
            if (op.cut !== 0) return yield* call(handle.scale(op.to), op.cut)
            const fiber = yield* Effect.forkChild(handle.scale(op.to))
            calls.push(fiber)
            yield* settle
            // A supervisor giving up stops its slots in place: `stopping` below `processes`.
            const closing = (yield* handle.status).some((s) => s.taskId < handle.processes && s.state === "stopping")
            if (fiber.pollUnsafe() !== undefined && result.pollUnsafe() === undefined && !closing) {
              assert.strictEqual(handle.processes, op.to, "scale returned, processes differ")
              assert.strictEqual((yield* handle.status).length, op.to, "scale returned, slots differ")
            }
            return
          }
          case "Reload": {
            const reload = handle.reload({ surge: op.surge, concurrency: op.concurrency })
            if (op.cut !== 0) return yield* call(reload, op.cut)
            const asked = yield* found()
            const fiber = yield* Effect.forkChild(Effect.tap(reload, () => truthful("reload", asked)))
            calls.push(fiber)
            yield* settle
            // A reload that failed has stopped the replacement it gave up on.
            const done = fiber.pollUnsafe()
            if (done !== undefined && Exit.isFailure(done) && result.pollUnsafe() === undefined) {
              const failed = done.cause.reasons.find((r) => r._tag === "Fail")?.error
              if (failed?._tag === "ReloadFailed") {
                yield* settle
                const slot = (yield* handle.status).find((s) => s.taskId === failed.taskId)
                assert.isTrue(
                  slot === undefined || Option.isNone(slot.replacement),
                  "a failed surge left its replacement"
                )
              }
            }
            return
          }
          case "AwaitReady":
            return yield* call(handle.awaitReady, op.cut)
        }
      })

    for (const [i, op] of scenario.ops.entries()) {
      yield* step(op)
      yield* settle
      // Every worker ever started got the sockets, and they stay open while the supervisor runs a worker or will
      // restart one; the shutdown (every slot stopping) closes the supervisor's copies as it stops the workers.
      const serving = (yield* handle.status).some(
        (s) => s.state === "starting" || s.state === "running" || s.state === "restarting"
      )
      if (scenario.listen && result.pollUnsafe() === undefined && serving) {
        assert.isTrue(
          (yield* spawner.sockets).every((s) => s.open),
          "a socket closed while workers run"
        )
        for (const p of yield* spawner.live) assert.strictEqual(p.request.sockets?.length, 2)
      }
      if (result.pollUnsafe() === undefined) yield* checkConsistent(spawner, handle, `after op ${i} (${op._tag})`)
    }

    // With health: a quiet while, replacements made ready as they come; every recycle asked by then happens
    // (its worker is gone), unless the supervision ended meanwhile.
    if (scenario.health && result.pollUnsafe() === undefined) {
      const asked = seen.flatMap((e) => (e._tag === "Recycling" ? [e.pid] : []))
      for (let i = 0; i < 60 && result.pollUnsafe() === undefined; i++) {
        for (const p of yield* workers(spawner)) yield* spawner.ready(p.pid)
        yield* TestClock.adjust(500)
        yield* settle
      }
      if (result.pollUnsafe() === undefined) {
        for (const pid of asked) {
          assert.isTrue(Option.isSome((yield* spawner.process(pid)).exitStatus), `the recycle of pid ${pid} was lost`)
        }
      }
    }

    // The end: a stop, an interruption, or every worker finishing.
    if (scenario.ending === "stop") {
      const stopping = yield* Effect.forkChild(handle.stop)
      for (let i = 0; i < 4 && stopping.pollUnsafe() === undefined; i++) {
        yield* settle
        yield* TestClock.adjust(STOP_TIMEOUT)
      }
      yield* Fiber.join(stopping)
    } else if (scenario.ending === "interrupt") {
      const closing = yield* Effect.forkChild(Scope.close(scope, Exit.interrupt()))
      for (let i = 0; i < 4 && closing.pollUnsafe() === undefined; i++) {
        yield* settle
        yield* TestClock.adjust(STOP_TIMEOUT)
      }
      yield* Fiber.join(closing)
    } else {
      // Workers end normally whenever they are there; time passes for delays, readiness and stops.
      for (let i = 0; i < 200 && result.pollUnsafe() === undefined; i++) {
        for (const p of yield* workers(spawner)) {
          yield* spawner.ready(p.pid)
          yield* spawner.exit(p.pid, ExitStatus.exited(0))
        }
        yield* settle
        yield* TestClock.adjust(1000)
      }
    }
    const outcome = yield* Fiber.await(result)

    // The moment the supervisor returns: nothing of it is alive, and its sockets are closed.
    assert.deepStrictEqual(
      (yield* spawner.live).map((p) => p.pid),
      [],
      "a process outlived the supervisor"
    )
    const sockets = yield* spawner.sockets
    assert.strictEqual(sockets.length, scenario.listen ? 2 : 0)
    assert.isTrue(
      sockets.every((s) => !s.open),
      "a socket outlived the supervisor"
    )

    yield* Scope.close(scope, Exit.void)
    const events = Array.from(yield* Fiber.join(collector))
    yield* settle

    assert.deepStrictEqual(untruths, [], "an answer was not true")

    // Every handle call has returned.
    for (const fiber of calls) {
      if (fiber.pollUnsafe() === undefined) assert.fail("a handle call still waits after the supervisor returned")
    }

    // Every process: one Started (a spare: one SpareStarted, and one Started if a slot took it), one Exited
    // (a spare no slot took: one SpareExited).
    const processes = yield* spawner.processes
    const startedPids = events.flatMap((e) => (e._tag === "Started" && e.spare !== true ? [e.pid] : []))
    const spareStarted = events.flatMap((e) => (e._tag === "SpareStarted" ? [e.pid] : []))
    const activated = events.flatMap((e) => (e._tag === "Started" && e.spare === true ? [e.pid] : []))
    const exited = events.filter((e): e is Extract<Model.Event, { _tag: "Exited" }> => e._tag === "Exited")
    const spareExited = events.flatMap((e) => (e._tag === "SpareExited" ? [e.pid] : []))
    assert.deepStrictEqual(
      [...startedPids, ...spareStarted].sort(),
      processes.map((p) => p.pid).sort(),
      "Started events and spawned processes differ"
    )
    assert.deepStrictEqual(
      activated.slice().sort(),
      processes
        .filter((p) => Option.isSome(p.activatedAt))
        .map((p) => p.pid)
        .sort(),
      "a spare was taken without a Started event"
    )
    assert.deepStrictEqual(
      [...exited.map((e) => e.pid), ...spareExited].sort(),
      processes.map((p) => p.pid).sort(),
      "Exited events and spawned processes differ"
    )
    for (const p of processes) {
      if (!p.spare) continue
      assert.isTrue(Option.isNone(p.activatedAt) || !spareExited.includes(p.pid), "a taken spare told as a spare")
    }
    assert.strictEqual(events.at(-1)?._tag, "Finished")

    // The budget, as Tornado counts it: each abnormal exit that is restarted spends one.
    const spends = exited.filter((e) => e.restart && e.requested !== true && e.stopped !== true).length
    const notReady = exited.filter((e) => Option.isSome(e.notReady)).length
    assert.isAtMost(spends, faults + notReady, "budget spent on exits that were not failures")
    if (Exit.isSuccess(outcome)) {
      assert.strictEqual(outcome.value.restarts, spends)
      assert.isAtMost(outcome.value.restarts, scenario.maxRestarts)
    } else {
      const failure = outcome.cause.reasons.find((r) => r._tag === "Fail")
      if (failure !== undefined) {
        const error = failure.error
        assert.strictEqual(error._tag, "TooManyRestarts")
        if (error._tag === "TooManyRestarts") {
          // The exit that found the budget spent is told ", restarting" (as Tornado logs it) but not restarted.
          assert.strictEqual(error.restarts, scenario.maxRestarts)
          assert.strictEqual(spends, scenario.maxRestarts + 1)
        }
      } else {
        assert.isTrue(Exit.hasInterrupts(outcome))
        assert.notStrictEqual(scenario.ending, "finish")
      }
    }
  }).pipe(Effect.provide(Layer.merge(TestSpawner.layer(), Logger.layer([]))))

describe("Supervisor properties (in-memory spawner, TestClock)", () => {
  it.effect.prop(
    "random faults and handle calls keep every invariant",
    { scenario: Scenario },
    ({ scenario }) => runScenario(scenario),
    { timeout: 60_000, arbitrary: { runs: 300 } }
  )

  it.effect.prop(
    "with heartbeats, recycling and spares: hung workers, memory and dying spares keep every invariant",
    { scenario: HealthScenario },
    ({ scenario }) => runScenario(scenario),
    { timeout: 60_000, arbitrary: { runs: 200 } }
  )
})
