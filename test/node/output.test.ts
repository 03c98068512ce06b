/**
 * `stdio: "pipe"`: every line of every worker reaches `onOutput`, in order,
 * including the last unterminated line of a crashing worker.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import type { OutputLine } from "../../src/ProcessSpawner.ts"
import { assertNoneLeft } from "../helpers/procs.ts"
import { superviseNode } from "../helpers/supervise.ts"

describe("worker output (real processes)", () => {
  it.live("a worker that writes 1 MiB then exits 1 loses no line and no byte", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const lines: Array<OutputLine> = []
        const { handle, tag } = yield* superviseNode("chatty.js", ["1024", "1"], {
          processes: 1,
          maxRestarts: 0,
          stdio: "pipe",
          onOutput: (line) => {
            lines.push(line)
          }
        })
        yield* Effect.flip(handle.await)
        const out = lines.filter((l) => l.stream === "stdout").map((l) => l.line)
        assert.strictEqual(out.length, 1025)
        out.slice(0, 1024).forEach((line, i) => {
          assert.strictEqual(line.length, 1007)
          assert.isTrue(line.startsWith(String(i).padStart(6, "0")))
        })
        assert.strictEqual(out[1024], "last words without newline")
        assert.deepStrictEqual(
          lines.filter((l) => l.stream === "stderr").map((l) => l.line),
          ["to stderr ünïcödé"]
        )
        assert.isTrue(lines.every((l) => l.taskId === 0 && l.pid > 0))
        yield* assertNoneLeft(tag)
      })
    )
  )
})
