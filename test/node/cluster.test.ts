/**
 * Cluster mode and the worker side, with real processes: cluster workers
 * sharing one port, restarted with their task id (never cluster's worker id),
 * readiness for real (listening, `Worker.ready`, the ready timeout), and the
 * exits of `Prefork.run` workers: 0 on success, 1 on failure, and death by
 * SIGTERM after their finalizers when a SIGTERM interrupts them (FAULTS row
 * 40: restarted when someone else sent it, a stop when the primary did).
 * Both with the vitest worker as the
 * cluster primary (`Supervisor.start` with mode "cluster") and with a primary
 * of its own running `Prefork.forkProcesses` / `Prefork.run` under
 * `Prefork.runMain`.
 */
import { execFileSync } from "node:child_process"
import { existsSync, readFileSync } from "node:fs"
import * as Path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Option } from "effect"
import * as ExitStatus from "../../src/ExitStatus.ts"
import * as NodeProcessSpawner from "../../src/node/NodeProcessSpawner.ts"
import { ProcessSpawner } from "../../src/ProcessSpawner.ts"
import type * as Supervisor from "../../src/Supervisor.ts"
import { ENV_VAR, TaskId } from "../../src/TaskId.ts"
import {
  type Answer,
  ask,
  awaitExit,
  filesStartingWith,
  freePort,
  readyEvents,
  spawnPrimary,
  superviseScript,
  waitHttp,
  waitLine
} from "../helpers/primary.ts"
import { assertNoneLeft, eventually, makeTag } from "../helpers/procs.ts"
import { exitedEvents, fixture, started, tempDir } from "../helpers/supervise.ts"

/** Asks up to `tries` times; returns the answers that came back. */
const askMany = (port: number, tries: number) =>
  Effect.gen(function* () {
    const answers: Array<Answer> = []
    for (let i = 0; i < tries; i++) {
      const answer = yield* ask(port)
      if (Option.isSome(answer)) answers.push(answer.value)
    }
    return answers
  })

/** Asks until `until` holds for the answers so far (bounded: 400 requests, 10 seconds). */
const askUntil = (port: number, until: (answers: ReadonlyArray<Answer>) => boolean) =>
  Effect.gen(function* () {
    const answers: Array<Answer> = []
    const deadline = Date.now() + 10_000
    for (let i = 0; i < 400 && !until(answers) && Date.now() < deadline; i++) {
      const answer = yield* ask(port)
      if (Option.isSome(answer)) answers.push(answer.value)
      yield* Effect.sleep(20)
    }
    return answers
  })

/** Waits until `n` Ready events have been collected (the handle's awaitReady may complete just before the last one is published). */
const waitReadyEvents = (events: ReadonlyArray<Supervisor.Event>, n: number) =>
  eventually(() => (readyEvents(events).length >= n ? readyEvents(events) : undefined), "3 seconds")

const inRange = (n: number) => (answer: Answer) => /^\d+$/.test(answer.task) && Number(answer.task) < n

describe("cluster mode, the vitest worker as primary (real processes)", () => {
  it.live(
    "workers share one port; a crashed worker comes back with its task id; exit 0 is not replaced; a Summary at the end",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const n = 3
          const port = yield* freePort
          const { events, handle, tag } = yield* superviseScript("http-worker.js", [String(port)], {
            mode: "cluster",
            processes: n,
            maxRestarts: 20
          })
          yield* Effect.timeoutOption(handle.awaitReady, "10 seconds")
          const firstReady = yield* waitReadyEvents(events, n)
          assert.deepStrictEqual(firstReady.map((e) => e.taskId).sort(), [0, 1, 2])

          // One port, several processes behind it.
          const spread = yield* askUntil(port, (as) => new Set(as.map((a) => a.pid)).size >= 2)
          assert.isAtLeast(new Set(spread.map((a) => a.pid)).size, 2)

          // Killed by a signal: same task id, new pid; the others keep serving meanwhile.
          const victim = started(events).find((s) => s.taskId === 1)!
          process.kill(victim.pid, "SIGKILL")
          const during = yield* askMany(port, 5)
          assert.isAbove(during.length, 0)
          assert.isTrue(during.every((a) => a.pid !== victim.pid))
          const replacement = yield* eventually(() => started(events).filter((s) => s.taskId === 1)[1], "3 seconds")
          assert.notStrictEqual(replacement.pid, victim.pid)
          yield* eventually(() => readyEvents(events).find((r) => r.pid === replacement.pid), "3 seconds")
          const killed = exitedEvents(events).find((e) => e.pid === victim.pid)!
          assert.deepStrictEqual(killed.status, ExitStatus.signaled("SIGKILL"))
          assert.isTrue(killed.restart)

          // Exiting non-zero, several times: the same task id comes back each time with a new pid.
          for (let round = 0; round < 3; round++) {
            const before = started(events).length
            const answer = yield* ask(port, "/exit/3")
            assert.isTrue(Option.isSome(answer))
            if (Option.isNone(answer)) return
            const { pid, task } = answer.value
            const again = yield* eventually(
              () =>
                started(events)
                  .slice(before)
                  .find((s) => s.taskId === Number(task)),
              "3 seconds"
            )
            assert.notStrictEqual(again.pid, pid)
            // Listening again before the next round, so some worker always serves.
            yield* eventually(() => readyEvents(events).find((r) => r.pid === again.pid), "3 seconds")
            const exit = exitedEvents(events).find((e) => e.pid === pid)!
            assert.deepStrictEqual(exit.status, ExitStatus.exited(3))
            assert.isTrue(exit.restart)
          }

          // Task ids are 0..n-1, never cluster's worker.id (which grows with every fork).
          assert.isTrue(started(events).every((s) => s.taskId >= 0 && s.taskId < n))
          const after = yield* askMany(port, 9)
          assert.isAbove(after.length, 0)
          assert.isTrue(after.every(inRange(n)))
          assert.isTrue(after.some((a) => a.workerId !== null && a.workerId >= n))

          // Exiting 0: not replaced; the rest keep serving; once all did, a Summary.
          const normal = yield* ask(port, "/exit/0")
          assert.isTrue(Option.isSome(normal))
          if (Option.isNone(normal)) return
          const gone = Number(normal.value.task)
          const exit0 = yield* eventually(() => exitedEvents(events).find((e) => e.pid === normal.value.pid))
          assert.deepStrictEqual(exit0.status, ExitStatus.exited(0))
          assert.isFalse(exit0.restart)
          const rest = yield* askMany(port, 4)
          assert.isAbove(rest.length, 0)
          assert.isTrue(rest.every((a) => Number(a.task) !== gone))
          const status = yield* handle.status
          assert.strictEqual(status[gone]!.state, "exited")
          for (let i = 0; i < 30; i++) {
            const left = (yield* handle.status).filter((s) => s.state !== "exited").length
            if (left === 0) break
            yield* ask(port, "/exit/0")
          }
          const summary = yield* Effect.timeoutOption(handle.await, "5 seconds")
          assert.isTrue(Option.isSome(summary))
          if (Option.isNone(summary)) return
          assert.strictEqual(summary.value.restarts, 4)
          assert.isTrue(started(events).every((s) => s.taskId < n))
          assert.strictEqual(events.at(-1)?._tag, "Finished")
          assert.strictEqual(exitedEvents(events).filter((e) => !e.restart).length, n)
          yield* assertNoneLeft(tag)
        })
      )
  )

  it.live("readiness: a cluster worker is Ready when it listens, and then the port answers at once", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const port = yield* freePort
        const t0 = Date.now()
        const { events, handle, tag } = yield* superviseScript("http-worker.js", [String(port), "400"], {
          mode: "cluster",
          processes: 2
        })
        yield* handle.awaitReady
        assert.isAtLeast(Date.now() - t0, 400)
        const ready = yield* waitReadyEvents(events, 2)
        assert.strictEqual(ready.length, 2)
        for (const r of ready) {
          const start = started(events).find((s) => s.pid === r.pid)!
          assert.isAtLeast(r.at - start.at, 350)
        }
        // Ready means listening: the first request is answered, no retry needed.
        const answer = yield* ask(port)
        assert.isTrue(Option.isSome(answer))
        yield* handle.stop
        yield* assertNoneLeft(tag)
      })
    )
  )

  it.live('readiness: ready "message" with a module worker calling Worker.ready after 300 ms', () =>
    Effect.scoped(
      Effect.gen(function* () {
        const t0 = Date.now()
        const { events, handle, tag } = yield* superviseScript("ready-after.ts", ["300"], {
          mode: "module",
          processes: 2,
          ready: "message"
        })
        yield* eventually(() => started(events).length === 2 || undefined)
        const early = yield* handle.status
        assert.deepStrictEqual(
          early.map((s) => s.state),
          ["starting", "starting"]
        )
        yield* Effect.timeoutOption(handle.awaitReady, "10 seconds")
        assert.isAtLeast(Date.now() - t0, 300)
        const ready = yield* waitReadyEvents(events, 2)
        assert.strictEqual(ready.length, 2)
        for (const r of ready) {
          const start = started(events).find((s) => s.pid === r.pid)!
          assert.isAtLeast(r.at - start.at, 300)
        }
        const status = yield* handle.status
        assert.deepStrictEqual(
          status.map((s) => s.state),
          ["running", "running"]
        )
        yield* handle.stop
        yield* assertNoneLeft(tag)
      })
    )
  )

  it.live(
    "readiness: a worker never ready within readyTimeout 500 ms is stopped, counts, and ends in TooManyRestarts",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const { events, handle, tag } = yield* superviseScript("ready-after.ts", ["-1"], {
            mode: "module",
            processes: 1,
            ready: "message",
            readyTimeout: "500 millis",
            stopTimeout: "1 second",
            maxRestarts: 2
          })
          const t0 = Date.now()
          const error = yield* Effect.flip(handle.await)
          assert.isBelow(Date.now() - t0, 10_000)
          assert.strictEqual(error._tag, "TooManyRestarts")
          if (error._tag !== "TooManyRestarts") return
          assert.strictEqual(error.restarts, 2)
          assert.strictEqual(error.exits.length, 3)
          assert.isTrue(error.exits.every((e) => e.notReady !== undefined))
          const exits = exitedEvents(events)
          assert.strictEqual(exits.length, 3)
          assert.isTrue(exits.every((e) => Option.isSome(e.notReady)))
          assert.deepStrictEqual(
            exits.map((e) => e.restart),
            [true, true, true]
          )
          assert.strictEqual(readyEvents(events).length, 0)
          assert.strictEqual(started(events).length, 3)
          yield* assertNoneLeft(tag)
        })
      )
  )
})

describe("Prefork.run workers: exit codes (real processes)", () => {
  it.live("success exits 0 and is not restarted; the supervisor ends with a Summary", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const dir = yield* tempDir
        const { events, handle, tag } = yield* superviseScript("run-worker.ts", ["2", dir, "succeed"], {
          mode: "cluster",
          processes: 2,
          maxRestarts: 0
        })
        const summary = yield* Effect.timeoutOption(handle.await, "15 seconds")
        assert.isTrue(Option.isSome(summary))
        if (Option.isNone(summary)) return
        assert.strictEqual(summary.value.restarts, 0)
        assert.deepStrictEqual(
          summary.value.exits.map((e) => e.status),
          [ExitStatus.exited(0), ExitStatus.exited(0)]
        )
        assert.deepStrictEqual(
          exitedEvents(events).map((e) => e.restart),
          [false, false]
        )
        yield* assertNoneLeft(tag)
      })
    )
  )

  it.live("failure exits 1 and is restarted with the same task id, until the budget is spent", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const dir = yield* tempDir
        const { events, handle, tag } = yield* superviseScript("run-worker.ts", ["1", dir, "fail"], {
          mode: "cluster",
          processes: 1,
          maxRestarts: 2
        })
        const error = yield* Effect.flip(handle.await)
        assert.strictEqual(error._tag, "TooManyRestarts")
        const exits = exitedEvents(events)
        assert.deepStrictEqual(
          exits.map((e) => e.status),
          [1, 1, 1].map(ExitStatus.exited)
        )
        assert.deepStrictEqual(
          exits.map((e) => e.restart),
          [true, true, true]
        )
        assert.deepStrictEqual(
          started(events).map((s) => s.taskId),
          [0, 0, 0]
        )
        assert.strictEqual(new Set(started(events).map((s) => s.pid)).size, 3)
        yield* assertNoneLeft(tag)
      })
    )
  )

  it.live("SIGTERM runs the worker's finalizers, then the worker dies of SIGTERM (the signal seen once)", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const dir = yield* tempDir
        const { env, tag } = makeTag()
        const spawner = yield* ProcessSpawner
        const handle = yield* spawner.spawn({
          taskId: TaskId(0),
          mode: "cluster",
          command: fixture("run-worker.ts"),
          args: ["1", dir, "serve"],
          env: { ...env, [ENV_VAR]: "0" },
          stdio: "ignore",
          readiness: "spawn",
          stopTimeout: Duration.seconds(5)
        })
        yield* eventually(() => existsSync(Path.join(dir, "ready-0")) || undefined, "10 seconds")
        yield* handle.kill("SIGTERM")
        const status = yield* Effect.timeoutOption(handle.exit, "5 seconds")
        assert.deepStrictEqual(status, Option.some(ExitStatus.signaled("SIGTERM")))
        assert.isTrue(existsSync(Path.join(dir, `released-0-${handle.pid}`)))
        // Raised again with every listener removed: the fixture's own listener logged it once.
        assert.strictEqual(readFileSync(Path.join(dir, "signals"), "utf8"), `SIGTERM 0 ${handle.pid}\n`)
        yield* assertNoneLeft(tag)
      }).pipe(Effect.provide(NodeProcessSpawner.layer))
    )
  )

  it.live(
    "row 40: a worker someone kills with SIGTERM runs its finalizers, exits Signaled{SIGTERM} and is restarted with its task id; the supervisor stopping sends one SIGTERM each and restarts nothing",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const n = 2
          const dir = yield* tempDir
          const { events, handle, tag } = yield* superviseScript("run-worker.ts", [String(n), dir, "serve"], {
            mode: "cluster",
            processes: n,
            stopTimeout: "5 seconds"
          })
          yield* eventually(() => (filesStartingWith(dir, "ready-").length === n ? true : undefined), "15 seconds")
          const victim = started(events).find((s) => s.taskId === 1)!
          // From another process, as an operator would.
          execFileSync("kill", ["-TERM", String(victim.pid)])
          const exit = yield* eventually(() => exitedEvents(events).find((e) => e.pid === victim.pid), "5 seconds")
          assert.deepStrictEqual(exit.status, ExitStatus.signaled("SIGTERM"))
          assert.isTrue(exit.restart)
          assert.isTrue(existsSync(Path.join(dir, `released-1-${victim.pid}`)))
          const replacement = yield* eventually(() => started(events).filter((s) => s.taskId === 1)[1], "5 seconds")
          assert.notStrictEqual(replacement.pid, victim.pid)
          yield* eventually(
            () => readFileSync(Path.join(dir, "ready-1"), "utf8") === String(replacement.pid) || undefined,
            "10 seconds"
          )

          // The supervisor stopping: each live worker gets SIGTERM once, runs its finalizers, dies of it; no restart.
          const live = [started(events).find((s) => s.taskId === 0)!.pid, replacement.pid]
          yield* handle.stop
          const terms = readFileSync(Path.join(dir, "signals"), "utf8").trim().split("\n").sort()
          assert.deepStrictEqual(
            terms,
            [`SIGTERM 0 ${live[0]}`, `SIGTERM 1 ${live[1]}`, `SIGTERM 1 ${victim.pid}`].sort()
          )
          for (const [task, pid] of live.entries()) assert.isTrue(existsSync(Path.join(dir, `released-${task}-${pid}`)))
          assert.strictEqual(started(events).length, n + 1)
          // Their deaths by SIGTERM are stops, told as such: not restarted, no budget spent.
          const stops = exitedEvents(events).filter((e) => e.pid !== victim.pid)
          assert.deepStrictEqual(stops.map((e) => e.pid).sort(), [...live].sort())
          for (const e of stops) {
            assert.deepStrictEqual(e.status, ExitStatus.signaled("SIGTERM"))
            assert.isFalse(e.restart)
            assert.isTrue(e.stopped)
          }
          yield* assertNoneLeft(tag)
        })
      )
  )
})

describe("cluster mode, a primary of its own (real processes)", () => {
  it.live(
    "Prefork.forkProcesses (Tornado style): shared port, same task id after a kill, Option.none() once all exited 0",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const n = 2
          const port = yield* freePort
          const primary = yield* spawnPrimary("tornado.ts", [String(n), String(port), "5"])
          yield* waitHttp(port, "15 seconds")
          const spread = yield* askUntil(port, (as) => new Set(as.map((a) => a.pid)).size >= 2)
          assert.strictEqual(new Set(spread.map((a) => a.pid)).size, 2)
          assert.deepStrictEqual([...new Set(spread.map((a) => a.task))].sort(), ["0", "1"])

          const killed = yield* ask(port, "/kill/SIGKILL")
          assert.isTrue(Option.isSome(killed))
          if (Option.isNone(killed)) return
          const { pid, task } = killed.value
          yield* waitLine(
            primary,
            new RegExp(`child ${task} \\(pid ${pid}\\) killed by signal 9, restarting`),
            "5 seconds"
          )
          const back = yield* askUntil(port, (as) => as.some((a) => a.task === task && a.pid !== pid))
          const newcomer = back.find((a) => a.task === task && a.pid !== pid)
          assert.isDefined(newcomer)
          // Its task id is the one it replaces, while cluster's worker id has moved on.
          assert.strictEqual(newcomer!.workerId, n + 1)
          assert.isTrue(back.every(inRange(n)))

          for (let i = 0; i < 40 && primary.exited() === undefined; i++) {
            yield* ask(port, "/exit/0")
            yield* Effect.sleep(50)
          }
          const exit = yield* awaitExit(primary, "5 seconds")
          assert.deepStrictEqual(exit, { code: 0, signal: null })
          assert.isTrue(primary.lines.includes("ALL EXITED NORMALLY"))
          assert.strictEqual(primary.lines.filter((l) => l.includes("exited normally") && l.startsWith("[")).length, n)
          yield* assertNoneLeft(primary.tag)
        })
      )
  )

  it.live(
    "Prefork.forkProcesses with runMain: a worker killed with SIGTERM from outside dies of it and comes back with its task id; SIGTERM to the primary then restarts nothing",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const n = 2
          const port = yield* freePort
          const primary = yield* spawnPrimary("tornado.ts", [String(n), String(port), "5"])
          yield* waitHttp(port, "15 seconds")
          const first = yield* ask(port)
          assert.isTrue(Option.isSome(first))
          if (Option.isNone(first)) return
          const { pid, task } = first.value
          execFileSync("kill", ["-TERM", String(pid)])
          yield* waitLine(
            primary,
            new RegExp(`child ${task} \\(pid ${pid}\\) killed by signal 15, restarting`),
            "5 seconds"
          )
          const back = yield* askUntil(port, (as) => as.some((a) => a.task === task && a.pid !== pid))
          assert.isDefined(back.find((a) => a.task === task && a.pid !== pid))

          process.kill(primary.pid, "SIGTERM")
          const exit = yield* awaitExit(primary, "8 seconds")
          assert.deepStrictEqual(exit, { code: 0, signal: null }, primary.lines.join("\n"))
          assert.strictEqual(primary.lines.filter((l) => l.includes("restarting")).length, 1, primary.lines.join("\n"))
          yield* assertNoneLeft(primary.tag)
        })
      )
  )

  it.live(
    "Prefork.run with runMain: a worker killed with SIGTERM from outside runs its finalizers and is restarted; SIGTERM to the primary stops each worker once, exit 0",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const n = 2
          const dir = yield* tempDir
          const primary = yield* spawnPrimary("run-worker.ts", [String(n), dir, "serve"])
          const readyPid = (task: number) => {
            const file = Path.join(dir, `ready-${task}`)
            return existsSync(file) ? readFileSync(file, "utf8") : ""
          }
          yield* eventually(() => (readyPid(0) !== "" && readyPid(1) !== "") || undefined, "15 seconds")
          const victim = readyPid(1)
          execFileSync("kill", ["-TERM", victim])
          yield* waitLine(
            primary,
            new RegExp(`child 1 \\(pid ${victim}\\) killed by signal 15, restarting`),
            "5 seconds"
          )
          assert.isTrue(existsSync(Path.join(dir, `released-1-${victim}`)))
          const replacement = yield* eventually(() => (readyPid(1) !== victim ? readyPid(1) : undefined), "10 seconds")

          process.kill(primary.pid, "SIGTERM")
          const exit = yield* awaitExit(primary, "8 seconds")
          assert.deepStrictEqual(exit, { code: 0, signal: null }, primary.lines.join("\n"))
          const terms = readFileSync(Path.join(dir, "signals"), "utf8").trim().split("\n").sort()
          assert.deepStrictEqual(
            terms,
            [`SIGTERM 0 ${readyPid(0)}`, `SIGTERM 1 ${replacement}`, `SIGTERM 1 ${victim}`].sort()
          )
          assert.strictEqual(filesStartingWith(dir, "released-").length, n + 1)
          assert.strictEqual(primary.lines.filter((l) => l.includes("restarting")).length, 1, primary.lines.join("\n"))
          yield* assertNoneLeft(primary.tag)
        })
      )
  )

  it.live("Prefork.run with runMain: workers that succeed exit 0, are not restarted, and the primary exits 0", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const dir = yield* tempDir
        const primary = yield* spawnPrimary("run-worker.ts", ["2", dir, "succeed"])
        const exit = yield* awaitExit(primary, "15 seconds")
        assert.deepStrictEqual(exit, { code: 0, signal: null }, primary.lines.join("\n"))
        assert.isTrue(primary.lines.includes("DONE 0"))
        assert.strictEqual(primary.lines.filter((l) => /child \d \(pid \d+\) exited normally/.test(l)).length, 2)
        assert.isFalse(primary.lines.some((l) => l.includes("restarting")))
        yield* assertNoneLeft(primary.tag)
      })
    )
  )

  it.live(
    "Prefork.run with runMain: workers that fail exit 1 and are restarted; the primary gives up and exits 1",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const primary = yield* spawnPrimary("run-worker.ts", ["1", dir, "fail", "1"])
          const exit = yield* awaitExit(primary, "15 seconds")
          assert.deepStrictEqual(exit, { code: 1, signal: null }, primary.lines.join("\n"))
          assert.strictEqual(
            primary.lines.filter((l) => /child 0 \(pid \d+\) exited with status 1, restarting/.test(l)).length,
            2
          )
          assert.isTrue(
            primary.lines.some((l) => l.includes("Too many child restarts")),
            primary.lines.join("\n")
          )
          assert.strictEqual(filesStartingWith(dir, "ready-").length, 0)
          yield* assertNoneLeft(primary.tag)
        })
      )
  )
})
