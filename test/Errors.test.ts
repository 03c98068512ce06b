/**
 * The error classes and the small hand-written checks that replaced Schema on
 * the import path: they behave as the Schema versions did.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Equal, Option } from "effect"
import { ExitRecord, InvalidOptions, NotReady, SpawnFailed, TooManyRestarts } from "../src/Errors.ts"
import * as ExitStatus from "../src/ExitStatus.ts"
import * as Messages from "../src/Messages.ts"
import { TaskId } from "../src/TaskId.ts"

describe("Errors", () => {
  it.effect("a failure is caught by its tag, with its fields and message", () =>
    Effect.gen(function* () {
      const caught = yield* Effect.fail(
        new SpawnFailed({ taskId: 1, command: "nope", code: "ENOENT", message: "no such file" })
      ).pipe(Effect.catchTag("SpawnFailed", (e) => Effect.succeed(e)))
      assert.strictEqual(caught._tag, "SpawnFailed")
      assert.strictEqual(caught.code, "ENOENT")
      assert.strictEqual(caught.message, "no such file")
      assert.instanceOf(caught, Error)
      const invalid = yield* Effect.flip(
        Effect.gen(function* () {
          return yield* new InvalidOptions({ field: "processes", message: "must be at least 1" })
        })
      )
      assert.strictEqual(invalid.message, "must be at least 1")
    })
  )

  it("messages are computed from the fields", () => {
    const notReady = new NotReady({ taskId: 2, pid: 42, timeoutMillis: 500 })
    assert.strictEqual(notReady.message, "child 2 (pid 42) not ready within 500 ms")
    const exits = [
      new ExitRecord({ taskId: 0, pid: 40, status: ExitStatus.exited(3), at: 1 }),
      new ExitRecord({ taskId: 1, pid: 41, status: ExitStatus.signaled("SIGKILL"), at: 2 })
    ]
    assert.strictEqual(
      new TooManyRestarts({ restarts: 5, exits }).message,
      "Too many child restarts, giving up after 5 restarts (last: child 1 (pid 41) killed by signal 9)"
    )
    assert.strictEqual(
      new TooManyRestarts({
        restarts: 1,
        exits: [new ExitRecord({ taskId: 2, pid: 42, status: ExitStatus.signaled("SIGTERM"), at: 3, notReady })]
      }).message,
      "Too many child restarts, giving up after 1 restarts (last: child 2 (pid 42) not ready within 500 ms)"
    )
  })

  it("exit statuses and records compare by value", () => {
    assert.isTrue(Equal.equals(ExitStatus.exited(1), ExitStatus.exited(1)))
    assert.isFalse(Equal.equals(ExitStatus.exited(1), ExitStatus.signaled("SIGKILL")))
    assert.isTrue(
      Equal.equals(
        new ExitRecord({ taskId: 0, pid: 1, status: ExitStatus.exited(1), at: 5 }),
        new ExitRecord({ taskId: 0, pid: 1, status: ExitStatus.exited(1), at: 5 })
      )
    )
  })
})

describe("TaskId", () => {
  it("is a non-negative integer", () => {
    assert.strictEqual(TaskId(3), 3)
    assert.throws(() => TaskId(-1), /non-negative integer/)
    assert.throws(() => TaskId(1.5))
    assert.deepStrictEqual(TaskId.option(0), Option.some(TaskId(0)))
    assert.deepStrictEqual(TaskId.option(Number.NaN), Option.none())
    assert.isTrue(TaskId.is(7))
    assert.isFalse(TaskId.is(-0.5))
  })
})

describe("Messages.decode", () => {
  it("accepts the ready message, extra fields dropped, and nothing else", () => {
    assert.deepStrictEqual(Messages.decode({ type: "effect-prefork/ready" }), { type: "effect-prefork/ready" })
    assert.deepStrictEqual(Messages.decode({ type: "effect-prefork/ready", extra: 1 }), {
      type: "effect-prefork/ready"
    })
    for (const garbage of [null, undefined, 1, "effect-prefork/ready", [], {}, { type: "other" }, { type: 1 }]) {
      assert.isUndefined(Messages.decode(garbage))
    }
  })
})
