/**
 * Tornado's multi-process pattern with sockets the primary owns, for real:
 * its own `test_multi_process`, ported to `Prefork.bindSockets` +
 * `Prefork.forkProcesses`, and a supervisor started by socket activation
 * (`systemd-socket-activate`), which serves the socket it was handed.
 */
import { existsSync } from "node:fs"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Option } from "effect"
import { assertNoneLeft, pidsWithTag, TAG_VAR } from "../helpers/procs.ts"
import { awaitExit, freePort, get, spawnPrimary, waitLine } from "../helpers/primary.ts"
import { fixture } from "../helpers/supervise.ts"

describe("Tornado's pattern with owned sockets (real processes)", () => {
  it.live(
    "test_multi_process: both servers exit, the next GET is served, pids change, exit 0 is not restarted, the primary ends with Option.none()",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const primary = yield* spawnPrimary("tornado-multi.ts", [])
          const exit = yield* awaitExit(primary, "60 seconds")
          const lines = primary.lines.join("\n")
          assert.deepStrictEqual(exit, { code: 0, signal: null }, lines)
          // No waiting: every worker is gone when the primary has exited.
          assert.deepStrictEqual(pidsWithTag(primary.tag), [])
          const client = JSON.parse(primary.lines.find((l) => l.startsWith("CLIENT "))!.slice(7)) as {
            first: number
            pid: number
            pid2: number
          }
          assert.isAbove(client.first, 0)
          assert.notStrictEqual(client.pid, client.pid2)
          assert.include(lines, "PRIMARY none")
          // Three abnormal exits restarted (the budget, exactly), two normal exits not.
          assert.strictEqual(primary.lines.filter((l) => /exited with status [234], restarting/.test(l)).length, 3)
          assert.strictEqual(primary.lines.filter((l) => /child [01] \(pid \d+\) exited normally/.test(l)).length, 2)
          assert.isFalse(/Too many child restarts/.test(lines))
        })
      )
  )

  it.live.skipIf(!existsSync("/usr/bin/systemd-socket-activate"))(
    "socket activation in: started by systemd-socket-activate, the supervisor serves the socket it was handed",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const port = yield* freePort
          const options = {
            mode: "module",
            command: fixture("fd-server.js"),
            processes: 2,
            ready: "message",
            stopTimeout: "1 second"
          }
          const primary = yield* spawnPrimary("primary.ts", [JSON.stringify(options)], {
            // systemd-socket-activate gives its program an empty environment but for -E: the test's tag passes.
            prefix: ["/usr/bin/systemd-socket-activate", "-E", "PATH", "-E", TAG_VAR, "-l", `127.0.0.1:${port}`]
          })
          // systemd-socket-activate listens first, and starts the supervisor on the first connection.
          yield* waitLine(primary, /^Listening on .* as 3\./)
          const answer = yield* get(port, "/", 20_000)
          assert.isTrue(Option.isSome(answer) && answer.value.status === 200, primary.lines.join("\n"))
          const served = JSON.parse(Option.getOrThrow(answer).body) as { pid: number; listenPid: string }
          assert.strictEqual(served.listenPid, String(served.pid))
          // The workers carry the test's tag, so the check that none is left at the end means something.
          assert.include(pidsWithTag(primary.tag), served.pid)
          yield* waitLine(primary, /^EVENT \{"_tag":"Listening"/)
          const listening = primary.lines.find((l) => l.startsWith('EVENT {"_tag":"Listening"'))!
          assert.include(listening, `"port":${port}`)
          assert.strictEqual(primary.events().filter((e) => e._tag === "Started").length, 2)
          primary.child.kill("SIGTERM")
          const exit = yield* awaitExit(primary)
          assert.strictEqual(exit.code, 0, primary.lines.join("\n"))
          yield* assertNoneLeft(primary.tag)
        })
      )
  )

  it.live("Prefork.runMain: SIGHUP reloads the workers of forkProcesses with no request lost; SIGTERM exits 0", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const primary = yield* spawnPrimary("tornado-serve.ts", [])
        const port = Number((yield* waitLine(primary, /^PORT \d+$/)).slice(5))
        const ask = Effect.map(
          get(port, "/", 10_000),
          Option.map((r) => JSON.parse(r.body) as { pid: number })
        )
        const before = new Set<number>()
        for (let i = 0; i < 10; i++) Option.map(yield* ask, (a) => before.add(a.pid))
        assert.isAbove(before.size, 0, primary.lines.join("\n"))
        const failed: Array<number> = []
        const load = yield* Effect.forkChild(
          Effect.gen(function* () {
            for (let i = 0; i < 5000; i++) if (Option.isNone(yield* ask)) failed.push(i)
          })
        )
        primary.child.kill("SIGHUP")
        yield* waitLine(primary, /Reload finished/, "30 seconds")
        yield* Fiber.interrupt(load)
        assert.deepStrictEqual(failed, [], primary.lines.join("\n"))
        for (let i = 0; i < 10; i++) Option.map(yield* ask, (a) => assert.isFalse(before.has(a.pid)))
        primary.child.kill("SIGTERM")
        const exit = yield* awaitExit(primary)
        assert.strictEqual(exit.code, 0, primary.lines.join("\n"))
        assert.deepStrictEqual(pidsWithTag(primary.tag), [])
      })
    )
  )
})
