/**
 * `Output.make`'s sink and a stream whose buffer is full: nothing to wait for
 * while `write` takes the lines, an effect that waits for `'drain'` when it
 * does not, released by `'error'` (EPIPE) or `'close'` too, after which lines
 * are dropped.
 */
import { EventEmitter } from "node:events"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import * as Output from "../../src/cli/Output.ts"
import { TaskId } from "../../src/TaskId.ts"

/** A stream whose `write` returns what `full` says, recording each write. */
const fakeStream = () => {
  const emitter = new EventEmitter()
  const writes: Array<string> = []
  const state = { full: false }
  const stream = Object.assign(emitter, {
    isTTY: false,
    write: (text: string) => {
      writes.push(text)
      return !state.full
    }
  })
  return { stream, writes, state }
}

const line = (text: string) => ({ taskId: TaskId(0), pid: 10, stream: "stdout" as const, line: text })

describe("Output.make: backpressure", () => {
  it.effect("nothing to wait for while the stream takes lines; a full stream's line waits for 'drain'", () =>
    Effect.gen(function* () {
      const out = fakeStream()
      const err = fakeStream()
      const sink = Output.make({ stdout: out.stream, stderr: err.stream, env: {} })
      assert.isUndefined(sink(line("a")))
      out.state.full = true
      const wait = sink(line("b"))
      assert.isTrue(Effect.isEffect(wait))
      // The same effect for every blocked line: nothing is allocated per line.
      assert.strictEqual(sink(line("c")), wait)
      const fiber = yield* Effect.forkChild(wait as Effect.Effect<void>)
      yield* Effect.yieldNow
      assert.isUndefined(fiber.pollUnsafe())
      out.state.full = false
      out.stream.emit("drain")
      yield* Fiber.join(fiber)
      assert.deepStrictEqual(out.writes, ["[0:10] a\n", "[0:10] b\n", "[0:10] c\n"])
      assert.deepStrictEqual(err.writes, [])
    })
  )

  it.effect("a reader that goes away (EPIPE) releases whoever waits, and later lines are dropped", () =>
    Effect.gen(function* () {
      const out = fakeStream()
      const sink = Output.make({ stdout: out.stream, stderr: fakeStream().stream, env: {} })
      out.state.full = true
      const waiting = [
        yield* Effect.forkChild(sink(line("a")) as Effect.Effect<void>),
        yield* Effect.forkChild(sink(line("b")) as Effect.Effect<void>)
      ]
      yield* Effect.yieldNow
      out.stream.emit("error", Object.assign(new Error("write EPIPE"), { code: "EPIPE" }))
      for (const fiber of waiting) yield* Fiber.join(fiber)
      assert.isUndefined(sink(line("dropped")))
      assert.deepStrictEqual(out.writes, ["[0:10] a\n", "[0:10] b\n"])
    })
  )

  it.effect(
    "a wait can be interrupted; a stream that closes releases whoever waits; one drain and one close listener in all",
    () =>
      Effect.gen(function* () {
        const out = fakeStream()
        const sink = Output.make({ stdout: out.stream, stderr: fakeStream().stream, env: {} })
        out.state.full = true
        const interrupted = yield* Effect.forkChild(sink(line("a")) as Effect.Effect<void>)
        yield* Effect.yieldNow
        yield* Fiber.interrupt(interrupted)
        const waiting = yield* Effect.forkChild(sink(line("b")) as Effect.Effect<void>)
        yield* Effect.yieldNow
        out.stream.emit("close")
        yield* Fiber.join(waiting)
        assert.isUndefined(sink(line("dropped")))
        // One listener each, however many lines waited.
        assert.strictEqual(out.stream.listenerCount("drain"), 1)
        assert.strictEqual(out.stream.listenerCount("close"), 1)
      })
  )
})
