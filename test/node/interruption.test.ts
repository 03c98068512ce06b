/**
 * Interruption with real processes (FAULTS rows 33 and 38), on the `setpriv`
 * path and on the watchdog path: a stop, once begun, always completes, and
 * whatever is interrupted, the state stays consistent. Each test checks, at
 * the moment the code under test returns, that no process of it is left.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Option } from "effect"
import { TaskId } from "../../src/TaskId.ts"
import { assertNoneLeft, eventually, pidsWithTag } from "../helpers/procs.ts"
import {
  exitedEvents,
  fixture,
  spawnerPaths,
  started,
  supervise,
  superviseNode,
  tempDir
} from "../helpers/supervise.ts"
import { readdirSync } from "node:fs"

/** Waits until `n` workers of `dir` have installed their handlers (ignore-term.js writes ready-<id>). */
const readyFiles = (dir: string, n: number) =>
  eventually(
    () => (readdirSync(dir).filter((f) => f.startsWith("ready-")).length >= n ? true : undefined),
    "10 seconds"
  )

for (const { layer, path } of spawnerPaths) {
  describe(`interruption, ${path} path (real processes)`, () => {
    it.live(
      "row 33: interrupting the supervisor while it stops a worker that missed readyTimeout and ignores SIGTERM",
      () =>
        Effect.scoped(
          Effect.gen(function* () {
            const dir = yield* tempDir
            const { handle, tag } = yield* supervise(
              {
                mode: "module",
                command: fixture("ignore-term.js"),
                args: [dir],
                processes: 1,
                ready: "message",
                readyTimeout: "3 seconds",
                stopTimeout: "1 second",
                maxRestarts: 0
              },
              undefined,
              layer
            )
            yield* readyFiles(dir, 1)
            // Past the ready timeout: the supervisor has sent SIGTERM, which the worker ignores.
            yield* eventually(
              () => (readdirSync(dir).some((f) => f.startsWith("term-")) ? true : undefined),
              "10 seconds"
            )
            yield* handle.stop
            // No grace period: the stop has completed, SIGKILL included.
            assert.deepStrictEqual(pidsWithTag(tag), [])
            yield* assertNoneLeft(tag)
          })
        )
    )

    it.live("row 33: an interrupted restart() still completes the stop it began; a later restart works", () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const { events, handle, tag } = yield* superviseNode(
            "ignore-term.js",
            [dir],
            { processes: 1, stopTimeout: "500 millis" },
            undefined,
            layer
          )
          yield* readyFiles(dir, 1)
          const first = started(events)[0]!.pid
          const restarting = yield* Effect.forkChild(handle.restart(TaskId(0)))
          yield* Effect.sleep("100 millis")
          yield* Fiber.interrupt(restarting)
          // The stop goes on: SIGKILL at its deadline, then a replacement under task 0.
          yield* eventually(() => (started(events).length === 2 ? true : undefined), "10 seconds")
          assert.isFalse(pidsWithTag(tag).includes(first))
          const exited = exitedEvents(events)[0]!
          assert.deepStrictEqual([exited.pid, exited.requested, exited.status._tag], [first, true, "Signaled"])
          yield* handle.restart(TaskId(0))
          assert.strictEqual(started(events).length, 3)
          yield* handle.stop
          assert.deepStrictEqual(pidsWithTag(tag), [])
        })
      )
    )

    it.live(
      "row 38: an interrupted scale-down still stops and removes its slots; scale and awaitReady work after",
      () =>
        Effect.scoped(
          Effect.gen(function* () {
            const dir = yield* tempDir
            const { events, handle, tag } = yield* superviseNode(
              "ignore-term.js",
              [dir],
              { processes: 3, stopTimeout: "500 millis" },
              undefined,
              layer
            )
            yield* readyFiles(dir, 3)
            const scaling = yield* Effect.forkChild(handle.scale(1))
            yield* Effect.sleep("100 millis")
            yield* Fiber.interrupt(scaling)
            assert.strictEqual(handle.processes, 1)
            yield* eventually(() => (pidsWithTag(tag).length === 1 ? true : undefined), "10 seconds")
            yield* eventually(() => (exitedEvents(events).length === 2 ? true : undefined))
            assert.deepStrictEqual(
              exitedEvents(events)
                .map((e) => [e.taskId as number, e.stopped])
                .sort(),
              [
                [1, true],
                [2, true]
              ]
            )
            yield* handle.scale(2)
            yield* handle.awaitReady
            const status = yield* handle.status
            assert.deepStrictEqual(
              status.map((s) => [s.taskId as number, s.state]),
              [
                [0, "running"],
                [1, "running"]
              ]
            )
            // A worker just spawned may be mid-exec, its environment unreadable for a moment.
            yield* eventually(() => (pidsWithTag(tag).length === 2 ? true : undefined))
            yield* handle.stop
            assert.deepStrictEqual(pidsWithTag(tag), [])
          })
        )
    )

    it.live("status follows the leader's exit at once, even while a grandchild holds its pipe open", () =>
      Effect.scoped(
        Effect.gen(function* () {
          const lines: Array<string> = []
          const { events, handle, tag } = yield* superviseNode(
            "spawn-then-exit.js",
            [],
            {
              processes: 1,
              maxRestarts: 0,
              stopTimeout: "500 millis",
              stdio: "pipe",
              onOutput: (line) => {
                lines.push(line.line)
              }
            },
            undefined,
            layer
          )
          const exit = yield* Effect.exit(handle.await)
          assert.isTrue(Exit.isFailure(exit))
          // The leader exited 1 while its child (same group, same pipe) lived: the child is gone too.
          assert.deepStrictEqual(pidsWithTag(tag), [])
          const status = yield* handle.status
          assert.isTrue(Option.isNone(status[0]!.pid))
          assert.strictEqual(exitedEvents(events).length, 1)
          assert.isTrue(lines.some((l) => /^child \d+ started$/.test(l)))
          yield* assertNoneLeft(tag)
        })
      )
    )
  })
}
