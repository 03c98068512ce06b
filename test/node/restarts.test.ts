/**
 * FAULTS.md rows 1–6 and 30 with real processes: how exits are classified,
 * restarted with the same task id, and counted against the budget.
 */
import { existsSync, readFileSync } from "node:fs"
import * as Path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Option } from "effect"
import * as ExitStatus from "../../src/ExitStatus.ts"
import { ENV_VAR } from "../../src/TaskId.ts"
import { assertNoneLeft, eventually, pidsWithTag } from "../helpers/procs.ts"
import { exitedEvents, started, superviseNode, tempDir } from "../helpers/supervise.ts"

const taskIdOf = (pid: number): string | undefined => {
  try {
    return readFileSync(`/proc/${pid}/environ`, "latin1")
      .split("\0")
      .find((kv) => kv.startsWith(`${ENV_VAR}=`))
      ?.slice(ENV_VAR.length + 1)
  } catch {
    return undefined
  }
}

describe("restarts (real processes)", () => {
  it.live("row 1: exit(42) is one Exited{42} event and one restart with the same task id", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const dir = yield* tempDir
        const { events, handle, tag } = yield* superviseNode("once.js", [Path.join(dir, "marker"), "42"], {
          processes: 1,
          maxRestarts: 5
        })
        const summary = yield* handle.await
        const exits = exitedEvents(events)
        assert.strictEqual(exits.length, 2)
        assert.deepStrictEqual(exits[0]!.status, ExitStatus.exited(42))
        assert.isTrue(exits[0]!.restart)
        assert.deepStrictEqual(exits[1]!.status, ExitStatus.exited(0))
        assert.isFalse(exits[1]!.restart)
        const starts = started(events)
        assert.deepStrictEqual(
          starts.map((s) => s.taskId),
          [0, 0]
        )
        assert.notStrictEqual(starts[0]!.pid, starts[1]!.pid)
        assert.strictEqual(summary.restarts, 1)
        yield* assertNoneLeft(tag)
      })
    )
  )

  it.live("row 2: a SIGKILLed child is Signaled{SIGKILL} and restarted", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const { events, handle, tag } = yield* superviseNode("forever.js", [], { processes: 2 })
        const first = yield* eventually(() => started(events).find((s) => s.taskId === 1))
        process.kill(first.pid, "SIGKILL")
        const second = yield* eventually(() => started(events).filter((s) => s.taskId === 1)[1])
        assert.notStrictEqual(second.pid, first.pid)
        const exit = exitedEvents(events).find((e) => e.pid === first.pid)!
        assert.deepStrictEqual(exit.status, ExitStatus.signaled("SIGKILL"))
        assert.isTrue(exit.restart)
        const status = yield* handle.status
        assert.deepStrictEqual(
          status.map((s) => s.restarts),
          [0, 1]
        )
        yield* handle.stop
        yield* assertNoneLeft(tag)
      })
    )
  )

  it.live("row 2: process.abort() is Signaled{SIGABRT}, and counts against the budget", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const { handle, tag } = yield* superviseNode("abort.js", [], { processes: 1, maxRestarts: 0 })
        const error = yield* Effect.flip(handle.await)
        assert.strictEqual(error._tag, "TooManyRestarts")
        if (error._tag !== "TooManyRestarts") return
        assert.strictEqual(error.restarts, 0)
        assert.deepStrictEqual(
          error.exits.map((e) => e.status),
          [ExitStatus.signaled("SIGABRT")]
        )
        yield* assertNoneLeft(tag)
      })
    )
  )

  it.live("row 3: children that exit 0 are not restarted and the supervisor succeeds", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const { events, handle, tag } = yield* superviseNode("exit.js", ["0"], { processes: 3, maxRestarts: 0 })
        const summary = yield* handle.await
        assert.strictEqual(summary.restarts, 0)
        assert.strictEqual(started(events).length, 3)
        assert.deepStrictEqual(
          summary.exits.map((e) => e.status),
          [0, 1, 2].map(() => ExitStatus.exited(0))
        )
        assert.deepStrictEqual(events.at(-1)?._tag, "Finished")
        yield* assertNoneLeft(tag)
      })
    )
  )

  it.live("row 4: killing task 1 three times keeps the live task ids exactly {0,1,2}", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const { events, handle, tag } = yield* superviseNode("forever.js", [], { processes: 3 })
        const seen = new Set<number>()
        for (let round = 1; round <= 3; round++) {
          const victim = yield* eventually(() => started(events).filter((s) => s.taskId === 1)[round - 1])
          seen.add(victim.pid)
          process.kill(victim.pid, "SIGKILL")
          const next = yield* eventually(() => started(events).filter((s) => s.taskId === 1)[round])
          assert.isFalse(seen.has(next.pid))
          // The kernel's view: three live workers, one per task id, never two with one id.
          const live = yield* eventually(() => {
            const pids = pidsWithTag(tag)
            return pids.length === 3 && pids.includes(next.pid) ? pids : undefined
          })
          assert.deepStrictEqual(live.map(taskIdOf).sort(), ["0", "1", "2"])
        }
        const status = yield* handle.status
        assert.deepStrictEqual(
          status.map((s) => s.taskId),
          [0, 1, 2]
        )
        assert.deepStrictEqual(
          status.map((s) => s.restarts),
          [0, 3, 0]
        )
        yield* handle.stop
        yield* assertNoneLeft(tag)
      })
    )
  )

  it.live("row 5: maxRestarts 3 means exactly 1 + 3 starts, then TooManyRestarts, then nothing", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const dir = yield* tempDir
        const file = Path.join(dir, "starts")
        const { handle, tag } = yield* superviseNode("append-exit.js", [file, "1"], { processes: 1, maxRestarts: 3 })
        const error = yield* Effect.flip(handle.await)
        assert.strictEqual(error._tag, "TooManyRestarts")
        if (error._tag !== "TooManyRestarts") return
        assert.strictEqual(error.restarts, 3)
        assert.strictEqual(error.exits.length, 4)
        assert.strictEqual(readFileSync(file, "latin1"), "xxxx")
        yield* Effect.sleep("2 seconds")
        assert.strictEqual(readFileSync(file, "latin1"), "xxxx")
        yield* assertNoneLeft(tag)
      })
    )
  )

  it.live("row 6: giving up stops and reaps every sibling before TooManyRestarts surfaces", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const { events, handle, tag } = yield* superviseNode("by-task.js", [], { processes: 4, maxRestarts: 3 })
        yield* eventually(() => (started(events).filter((s) => s.taskId !== 0).length === 3 ? true : undefined))
        const exit = yield* Effect.exit(handle.await)
        // No waiting: at the moment the error is seen, no worker of the test is alive.
        assert.deepStrictEqual(pidsWithTag(tag), [])
        assert.isTrue(Exit.isFailure(exit))
        const status = yield* handle.status
        assert.deepStrictEqual(
          status.slice(1).map((s) => s.state),
          ["stopped", "stopped", "stopped"]
        )
        assert.deepStrictEqual(
          status.slice(1).map((s) => Option.isNone(s.lastExit)),
          [true, true, true]
        )
        yield* assertNoneLeft(tag)
      })
    )
  )

  it.live("row 30: arguments that look like shell syntax reach the child verbatim; no shell runs them", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const dir = yield* tempDir
        const out = Path.join(dir, "args.json")
        const tricky = ["; touch pwned", "$(touch pwned2)", "`touch pwned3`", "a b", "*", "&& id > pwned4"]
        const { handle, tag } = yield* superviseNode("write-args.js", [out, ...tricky], {
          processes: 1,
          maxRestarts: 0,
          cwd: dir
        })
        yield* handle.await
        assert.deepStrictEqual(JSON.parse(readFileSync(out, "utf8")), tricky)
        for (const name of ["pwned", "pwned2", "pwned3", "pwned4"]) assert.isFalse(existsSync(Path.join(dir, name)))
        yield* assertNoneLeft(tag)
      })
    )
  )
})
