/**
 * `stdio: "pipe"` with real processes: piped output is always read, at the
 * pace of `onOutput`, and split into lines as a person reads them.
 *
 * - Without `onOutput` it is read and dropped: a worker writing 1 MiB used to
 *   hang on a full pipe nobody read.
 * - When `onOutput` returns an effect, the stream waits for it: a fast
 *   writer is held back (its own write stays pending) instead of the primary
 *   buffering its output.
 * - CRLF line ends lose their `\r`; UTF-8 split across reads is decoded
 *   whole; a line over 1 MiB is passed on in pieces.
 */
import { existsSync, readFileSync } from "node:fs"
import * as Path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Duration, Effect, Option } from "effect"
import * as ExitStatus from "../../src/ExitStatus.ts"
import * as NodeProcessSpawner from "../../src/node/NodeProcessSpawner.ts"
import { type OutputSink, ProcessSpawner, type SpawnRequest } from "../../src/ProcessSpawner.ts"
import { TaskId } from "../../src/TaskId.ts"
import { eventually, makeTag, pidsWithTag } from "../helpers/procs.ts"
import { fixture, tempDir } from "../helpers/supervise.ts"

const paths = [
  ["setpriv", NodeProcessSpawner.layerWith({ watchdog: false })],
  ["watchdog", NodeProcessSpawner.layerWith({ parentDeathSignal: false, watchdog: true })]
] as const

const nodeWorker = (
  env: Record<string, string>,
  args: ReadonlyArray<string>,
  onOutput: OutputSink | undefined
): SpawnRequest => ({
  taskId: TaskId(0),
  mode: "command",
  command: process.execPath,
  args,
  env,
  stdio: "pipe",
  onOutput,
  readiness: "spawn",
  stopTimeout: Duration.seconds(1)
})

/**
 * Runs `out.js <what>` to its exit and returns the stdout lines `onOutput`
 * got (the scope's release waits, bounded, for the end of the stream).
 */
const outLines = (what: string) =>
  Effect.scoped(
    Effect.gen(function* () {
      const { env } = makeTag()
      const lines: Array<string> = []
      const spawner = yield* ProcessSpawner
      const handle = yield* spawner.spawn(
        nodeWorker(env, [fixture("out.js"), what], (line) => {
          if (line.stream === "stdout") lines.push(line.line)
        })
      )
      assert.deepStrictEqual(yield* handle.exit, ExitStatus.exited(0))
      return lines
    })
  )

for (const [path, layer] of paths) {
  describe(`piped output without a reader, ${path} path`, () => {
    it.live("a worker that writes 1 MiB with nobody reading completes and exits", () =>
      Effect.scoped(
        Effect.gen(function* () {
          const { env, tag } = makeTag()
          const spawner = yield* ProcessSpawner
          const handle = yield* spawner.spawn(nodeWorker(env, [fixture("chatty.js"), "1024", "0"], undefined))
          const exit = yield* Effect.timeoutOption(handle.exit, "10 seconds")
          assert.deepStrictEqual(exit, Option.some(ExitStatus.exited(0)))
          yield* handle.stop
          assert.deepStrictEqual(pidsWithTag(tag), [])
        }).pipe(Effect.provide(layer))
      )
    )
  })
}

describe("piped output, line by line", () => {
  it.live("CRLF line ends lose their \\r; a lone \\r inside a line and at the very end is kept", () =>
    Effect.gen(function* () {
      assert.deepStrictEqual(yield* outLines("crlf"), ["one", "two", "in\rside", "", "last\r"])
    }).pipe(Effect.provide(NodeProcessSpawner.layer))
  )

  it.live("UTF-8 characters split across reads are decoded whole", () =>
    Effect.gen(function* () {
      assert.deepStrictEqual(yield* outLines("utf8"), ["é€", "done"])
    }).pipe(Effect.provide(NodeProcessSpawner.layer))
  )

  it.live("a line over 1 MiB is passed on in pieces of 1 MiB, in order", () =>
    Effect.gen(function* () {
      const lines = yield* outLines("long")
      const MiB = 1024 * 1024
      assert.deepStrictEqual(
        lines.map((l) => l.length),
        [MiB, MiB, MiB / 2, 5]
      )
      assert.isTrue(lines.slice(0, 3).every((l) => /^x+$/.test(l)))
      assert.strictEqual(lines[3], "after")
    }).pipe(Effect.provide(NodeProcessSpawner.layer))
  )
})

describe("piped output, backpressure", () => {
  /** How many bytes a process has handed to `write(2)` so far (`/proc/<pid>/io`). */
  const written = (pid: number): number | undefined => {
    try {
      return Number(/^wchar: (\d+)$/m.exec(readFileSync(`/proc/${pid}/io`, "latin1"))?.[1])
    } catch {
      return undefined
    }
  }

  it.live("while onOutput's effect runs, nothing more is read: a fast writer's write stays pending", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const dir = yield* tempDir
        const { env } = makeTag()
        const LINES = 4096
        const total = LINES * 1024
        const gate = yield* Deferred.make<void>()
        const lines: Array<string> = []
        const spawner = yield* ProcessSpawner
        const handle = yield* spawner.spawn(
          nodeWorker(env, [fixture("flood-out.js"), dir, String(LINES)], (line) => {
            lines.push(line.line)
            return Deferred.await(gate)
          })
        )
        // The first line is in the sink, whose effect waits at the gate.
        yield* eventually(() => lines.length > 0 || undefined)
        // The worker is stuck: the bytes it has written stop growing (10 equal readings in a row, 10 ms apart).
        let same = 0
        let last: number | undefined
        const out = yield* eventually(() => {
          const now = written(handle.pid)
          same = now !== undefined && now === last ? same + 1 : 0
          last = now
          return same >= 10 ? now : undefined
        }, "20 seconds")
        assert.isFalse(existsSync(Path.join(dir, "flushed")))
        // Not one more line was delivered while the sink's effect ran.
        assert.strictEqual(lines.length, 1)
        // What left the worker (the pipe's buffer, and what the primary read: ~250 KiB measured) is bounded.
        assert.isBelow(out, 1024 * 1024, `${out} bytes written of ${total}`)
        yield* Deferred.succeed(gate, undefined)
        assert.deepStrictEqual(yield* handle.exit, ExitStatus.exited(0))
        assert.isTrue(existsSync(Path.join(dir, "flushed")))
        yield* eventually(() => lines.length === LINES || undefined, "10 seconds")
        assert.isTrue(lines.every((l, i) => l.startsWith(String(i).padStart(6, "0"))))
      }).pipe(Effect.provide(NodeProcessSpawner.layer))
    )
  )

  it.live("a sink that never completes does not hold up the stop: its effect is interrupted at the release", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const { env, tag } = makeTag()
      let interrupted = false
      // The timeout only catches a hang: a release that waited for the sink would never end.
      const released = yield* Effect.timeoutOption(
        Effect.scoped(
          Effect.gen(function* () {
            const spawner = yield* ProcessSpawner
            const seen = yield* Deferred.make<void>()
            yield* spawner.spawn(
              nodeWorker(env, [fixture("flood-out.js"), dir, "64"], () =>
                Deferred.succeed(seen, undefined).pipe(
                  Effect.andThen(Effect.never),
                  Effect.onInterrupt(() => Effect.sync(() => (interrupted = true)))
                )
              )
            )
            yield* Deferred.await(seen)
          })
        ),
        "10 seconds"
      )
      assert.isTrue(Option.isSome(released))
      assert.isTrue(interrupted)
      assert.deepStrictEqual(pidsWithTag(tag), [])
    }).pipe(Effect.provide(NodeProcessSpawner.layer), Effect.scoped)
  )
})

describe("piped output, the exit after the last words", () => {
  it.live("the exit waits for a slow sink's effect on the last line, longer than a pipe's holder is waited for", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const { env } = makeTag()
        let done = false
        const spawner = yield* ProcessSpawner
        const handle = yield* spawner.spawn(
          nodeWorker(env, [fixture("chatty.js"), "16", "1"], (line) =>
            line.line === "last words without newline"
              ? Effect.sleep("800 millis").pipe(Effect.andThen(Effect.sync(() => (done = true))))
              : undefined
          )
        )
        assert.deepStrictEqual(yield* handle.exit, ExitStatus.exited(1))
        assert.isTrue(done)
      }).pipe(Effect.provide(NodeProcessSpawner.layer))
    )
  )

  for (const how of ["silent", "trickle", "flood"] as const) {
    it.live(
      `a grandchild outside the group holding the pipe (${how}) does not hold up the exit; the last words come first`,
      () =>
        Effect.scoped(
          Effect.gen(function* () {
            const { env, tag } = makeTag()
            // The grandchild is in a group of its own: no stop reaches it. It is ended here, by pid.
            yield* Effect.addFinalizer(() =>
              Effect.sync(() => {
                for (const pid of pidsWithTag(tag)) {
                  try {
                    process.kill(pid, "SIGKILL")
                  } catch {
                    // gone meanwhile
                  }
                }
              })
            )
            const lines: Array<string> = []
            const spawner = yield* ProcessSpawner
            const handle = yield* spawner.spawn(
              nodeWorker(env, [fixture("hold-pipe.js"), how], (line) => {
                lines.push(line.line)
              })
            )
            // Without a bound the exit would wait for the grandchild's own end, 20 s later.
            const exit = yield* Effect.timeoutOption(handle.exit, "10 seconds")
            assert.deepStrictEqual(exit, Option.some(ExitStatus.exited(1)))
            assert.include(lines, "last words")
          }).pipe(Effect.provide(NodeProcessSpawner.layer))
        )
    )
  }
})
