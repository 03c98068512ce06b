/**
 * The live controls the CLI's signals use, on real processes: `restart` and
 * `reload` (SIGHUP) replace workers without spending budget, `scale` (SIGTTIN,
 * SIGTTOU) adds and removes slots.
 */
import { readdirSync } from "node:fs"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Option } from "effect"
import { assertNoneLeft, eventually, pidsWithTag } from "../helpers/procs.ts"
import { exitedEvents, fixture, started, supervise, superviseNode, tempDir } from "../helpers/supervise.ts"
import type * as Supervisor from "../../src/Supervisor.ts"
import { TaskId } from "../../src/TaskId.ts"

const alive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

describe("SupervisorHandle controls (real processes)", () => {
  it.live("restart(id) replaces one worker with the same task id and spends no budget", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const { events, handle, tag } = yield* superviseNode("forever.js", [], { processes: 2, maxRestarts: 0 })
        yield* handle.awaitReady
        yield* eventually(() => started(events).length >= 2 || undefined)
        const [first0, first1] = started(events).map((e) => e.pid)
        yield* handle.restart(TaskId(1))
        const status = yield* handle.status
        assert.deepStrictEqual(
          status.map((s) => [s.taskId, s.state, s.restarts]),
          [
            [0, "running", 0],
            [1, "running", 0]
          ]
        )
        assert.deepStrictEqual(Option.getOrNull(status[0]!.pid), first0)
        assert.notStrictEqual(Option.getOrNull(status[1]!.pid), first1)
        assert.isFalse(alive(first1!))
        yield* eventually(() => exitedEvents(events).length >= 1 || undefined)
        const exit = exitedEvents(events)
        assert.strictEqual(exit.length, 1)
        assert.deepStrictEqual(
          [exit[0]!.taskId, exit[0]!.pid, exit[0]!.restart, exit[0]!.requested],
          [1, first1, true, true]
        )
        // maxRestarts: 0 and still running: the budget was not touched.
        yield* handle.restart(TaskId(1))
        // (A process being exec'd can briefly show no environment in /proc: poll, bounded.)
        yield* eventually(() => pidsWithTag(tag).length === 2 || undefined, "2 seconds")
        const after = yield* handle.status
        assert.deepStrictEqual(
          after.map((s) => s.state),
          ["running", "running"]
        )
        yield* handle.stop
        yield* assertNoneLeft(tag)
      })
    )
  )

  it.live("reload restarts one slot at a time, each only once the previous new worker is ready", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const { events, handle, tag } = yield* superviseNode("forever.js", [], {
          processes: 3,
          ready: { delay: "150 millis" }
        })
        yield* handle.awaitReady
        // Events reach the array through a stream: wait until it has caught up.
        const readies = (n: number) => () => events.filter((e) => e._tag === "Ready").length >= n || undefined
        yield* eventually(readies(3))
        const mark = events.length
        yield* handle.reload({ surge: false })
        yield* eventually(readies(6))
        const after = events.slice(mark).map((e) => `${e._tag} ${"taskId" in e ? e.taskId : ""}`)
        assert.deepStrictEqual(after, [
          "Exited 0",
          "Started 0",
          "Ready 0",
          "Exited 1",
          "Started 1",
          "Ready 1",
          "Exited 2",
          "Started 2",
          "Ready 2"
        ])
        yield* eventually(() => pidsWithTag(tag).length === 3 || undefined, "2 seconds")
        assert.isTrue((yield* handle.status).every((s) => s.restarts === 0 && s.state === "running"))
        yield* handle.stop
        yield* assertNoneLeft(tag)
      })
    )
  )

  it.live("scale adds slots with the next task ids and removes the highest ones, stopping their workers", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const { events, handle, tag } = yield* superviseNode("forever.js", [], { processes: 2 })
        yield* handle.awaitReady
        yield* handle.scale(4)
        assert.strictEqual(handle.processes, 4)
        yield* handle.awaitReady
        yield* eventually(() => started(events).length >= 4 || undefined)
        const byTask = new Map(started(events).map((e) => [e.taskId as number, e.pid]))
        assert.deepStrictEqual([...byTask.keys()].sort(), [0, 1, 2, 3])
        yield* handle.scale(1)
        assert.strictEqual(handle.processes, 1)
        assert.deepStrictEqual(
          (yield* handle.status).map((s) => [s.taskId, s.state]),
          [[0, "running"]]
        )
        for (const task of [1, 2, 3]) assert.isFalse(alive(byTask.get(task)!), `task ${task}`)
        assert.deepStrictEqual(pidsWithTag(tag), [byTask.get(0)])
        // Each removal is told as a stop, never as an exit to restart.
        yield* eventually(() => (exitedEvents(events).length === 3 ? true : undefined))
        assert.deepStrictEqual(
          exitedEvents(events)
            .map((e) => [e.taskId as number, e.stopped, e.restart])
            .sort(),
          [
            [1, true, false],
            [2, true, false],
            [3, true, false]
          ]
        )
        const error = yield* Effect.flip(handle.scale(0))
        assert.strictEqual(error._tag, "InvalidOptions")
        yield* handle.stop
        yield* assertNoneLeft(tag)
      })
    )
  )

  it.live("a slot added by scale that crashes past the budget gives up the whole supervision", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const { handle, tag } = yield* superviseNode("cli-task-fails.js", ["1"], { processes: 1, maxRestarts: 2 })
        yield* handle.awaitReady
        yield* handle.scale(2)
        const error = yield* Effect.flip(handle.await)
        assert.strictEqual(error._tag, "TooManyRestarts")
        yield* eventually(() => (pidsWithTag(tag).length === 0 ? true : undefined))
        yield* assertNoneLeft(tag)
      })
    )
  )

  it.live(
    "live lists every process until it is reaped, a spare being stopped too (as a spare); kill SIGKILLs them all at once",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          // Every process ignores SIGTERM: left alone, the stop would take the whole 60 s.
          const { handle, tag } = yield* supervise({
            mode: "module",
            command: fixture("spare-ignore-term.js"),
            args: [dir],
            processes: 1,
            spares: 1,
            stopTimeout: "60 seconds"
          })
          yield* handle.awaitReady
          const [spare] = yield* eventually(
            () => (Effect.runSync(handle.spares).length === 1 ? Effect.runSync(handle.spares) : undefined),
            "15 seconds"
          )
          const worker = Option.getOrThrow((yield* handle.status)[0]!.pid)
          // Booted: their SIGTERM handlers are installed.
          yield* eventually(() => {
            const files = readdirSync(dir)
            return files.includes(`boot-${worker}`) && files.includes(`boot-${spare}`) ? true : undefined
          }, "15 seconds")
          /** Each process as `pid:task`, or `pid:spare`, sorted. */
          const listed = (live: ReadonlyArray<Supervisor.LiveProcess>) =>
            live.map((p) => `${p.pid}:${Option.getOrElse(p.taskId, () => "spare")}`).sort()
          const both = [`${worker}:0`, `${spare}:spare`].sort()
          assert.deepStrictEqual(listed(yield* handle.live), both)
          const stopping = yield* Effect.forkChild(handle.stop)
          // The spare has left the pool and the worker its slot, but neither is reaped: both still listed.
          yield* eventually(() => Effect.runSync(handle.spares).length === 0 || undefined)
          assert.deepStrictEqual(listed(yield* handle.live), both)
          assert.deepStrictEqual(listed(yield* handle.kill), both)
          yield* Fiber.join(stopping)
          assert.deepStrictEqual(yield* handle.live, [])
          assert.isFalse(alive(worker) || alive(spare!))
          yield* assertNoneLeft(tag)
        })
      )
  )
})
