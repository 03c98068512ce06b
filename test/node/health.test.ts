/**
 * The production lifecycle with real processes, through the supervisor:
 * a worker whose event loop blocks is caught by its heartbeats and replaced;
 * a worker that allocates past the memory limit is recycled under load with
 * no failed request; lifetimes with jitter spread the recycles; warm spares
 * take a dead worker's task id, never serve before, never outlive the
 * supervisor.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import * as ExitStatus from "../../src/ExitStatus.ts"
import type * as Supervisor from "../../src/Supervisor.ts"
import { writeFileSync } from "node:fs"
import * as Net from "node:net"
import * as Path from "node:path"
import { answered, type Answered, getJson, tcpPort } from "../helpers/http.ts"
import { eventually, pidsWithTag } from "../helpers/procs.ts"
import { fixture, supervise, tempDir } from "../helpers/supervise.ts"

type EventOf<T extends Supervisor.Event["_tag"]> = Extract<Supervisor.Event, { _tag: T }>
const ofTag =
  <T extends Supervisor.Event["_tag"]>(tag: T) =>
  (events: ReadonlyArray<Supervisor.Event>): Array<EventOf<T>> =>
    events.filter((e): e is EventOf<T> => e._tag === tag)
const exitedOf = ofTag("Exited")
const readyOf = ofTag("Ready")
const recyclingOf = ofTag("Recycling")

const server = {
  mode: "module",
  command: fixture("health-server.ts"),
  listen: ["127.0.0.1:0"],
  ready: "message",
  stopTimeout: "5 seconds"
} as const

/** A port free on 127.0.0.1 now (for node:cluster workers, which bind it themselves). */
const freePort = Effect.callback<number>((resume) => {
  const server = Net.createServer()
  server.listen(0, "127.0.0.1", () => {
    const { port } = server.address() as Net.AddressInfo
    server.close(() => resume(Effect.succeed(port)))
  })
})

/** GETs one after another on fresh connections until interrupted (bounded). */
const load = (port: number, answers: Array<Answered>) =>
  Effect.forkChild(
    Effect.gen(function* () {
      for (let i = 0; i < 20_000; i++) answers.push(yield* getJson({ port }))
    })
  )

describe("production lifecycle (real processes)", () => {
  it.live(
    "a worker whose event loop blocks misses its heartbeats: SIGUSR1, its stack fetched from its inspector, SIGKILL, replaced with its task id, budget spent",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const output: Array<{ pid: number; line: string }> = []
          const { events, handle, tag } = yield* supervise({
            ...server,
            processes: 2,
            // Beats every 500 ms: a loaded machine may delay one or two, never four.
            heartbeat: "2 seconds",
            stdio: "pipe",
            onOutput: ({ line, pid }) => void output.push({ pid, line })
          })
          yield* handle.awaitReady
          const port = tcpPort(handle.sockets)
          const blocked = answered(yield* getJson({ port }, "/block"))
          const blockedAt = Date.now()
          const exit = yield* eventually(() => exitedOf(events).find((e) => e.pid === blocked.pid), "30 seconds")
          assert.strictEqual(exit.reason?._tag, "Unresponsive")
          assert.isTrue(exit.restart)
          assert.deepStrictEqual(exit.status, ExitStatus.signaled("SIGKILL"))
          const told = ofTag("Unresponsive")(events).find((e) => e.pid === blocked.pid)
          assert.isDefined(told)
          assert.strictEqual(told!.signal, "SIGUSR1")
          // The supervisor fetched the stack the loop is stuck in from the worker's inspector: the fixture's spin.
          assert.match(told!.stack ?? "", /health-server\.ts:\d+:\d+\)/, `no stack: ${told!.stack}`)
          if (exit.reason?._tag === "Unresponsive") assert.strictEqual(exit.reason.stack, told!.stack)
          // Its last heartbeat was at most one interval (500 ms) before the block: never killed before its deadline.
          assert.isAtLeast(told!.at, blockedAt + 1400)
          // Node started its inspector on its own thread, while the event loop was blocked.
          assert.isTrue(
            output.some((o) => o.pid === blocked.pid && o.line.includes("Debugger listening")),
            `no inspector line from the blocked worker: ${JSON.stringify(output)}`
          )
          // Replaced with the same task id; the other worker untouched.
          const replacement = yield* eventually(() =>
            readyOf(events).find((e) => e.taskId === Number(blocked.task) && e.pid !== blocked.pid)
          )
          assert.strictEqual(exitedOf(events).length, 1)
          const status = yield* handle.status
          assert.strictEqual(status.find((s) => s.taskId === Number(blocked.task))!.restarts, 1)
          assert.isFalse(pidsWithTag(tag).includes(blocked.pid))
          assert.isTrue(pidsWithTag(tag).includes(replacement.pid))
          yield* handle.stop
          assert.deepStrictEqual(pidsWithTag(tag), [])
        })
      ),
    60_000
  )

  it.live(
    "a worker that allocates past maxMemory is recycled under load: replacement ready before the old one stops, no failed request, no budget",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const { events, handle, tag } = yield* supervise({
            ...server,
            processes: 2,
            maxRestarts: 0,
            maxMemory: "160M",
            memoryInterval: "200 millis"
          })
          yield* handle.awaitReady
          const port = tcpPort(handle.sockets)
          const answers: Array<Answered> = []
          const loader = yield* load(port, answers)
          const fat = answered(yield* getJson({ port }, "/alloc/200"))
          const recycled = yield* eventually(() => exitedOf(events).find((e) => e.pid === fat.pid), "30 seconds")
          yield* Fiber.interrupt(loader)
          assert.deepStrictEqual(
            answers.filter((a) => "error" in a),
            [],
            "failed requests during the recycle"
          )
          assert.isAbove(answers.length, 0)
          assert.strictEqual(recycled.reason?._tag, "Recycled")
          if (recycled.reason?._tag === "Recycled") {
            assert.strictEqual(recycled.reason.reason, "memory")
            assert.isAbove(recycled.reason.rssBytes!, 160 * 2 ** 20)
          }
          // A graceful stop (the fixture exits 0 on SIGTERM), after the replacement was ready.
          assert.deepStrictEqual(recycled.status, ExitStatus.exited(0))
          const recycling = recyclingOf(events).find((e) => e.pid === fat.pid)!
          const ready = readyOf(events).find((e) => e.taskId === Number(fat.task) && e.pid !== fat.pid)!
          assert.isDefined(ready)
          const order = (e: Supervisor.Event) => events.indexOf(e)
          assert.isBelow(order(recycling), order(ready))
          assert.isBelow(order(ready), order(recycled))
          assert.deepStrictEqual(
            (yield* handle.status).map((s) => s.restarts),
            [0, 0]
          )
          // The recycled worker's memory is gone; the replacement starts small.
          assert.isFalse(pidsWithTag(tag).includes(fat.pid))
          yield* handle.stop
          assert.deepStrictEqual(pidsWithTag(tag), [])
        })
      ),
    60_000
  )

  it.live(
    "lifetimes with jitter: each worker recycles after its own lifetime in [max, max + jitter], at different times",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const { events, handle, tag } = yield* supervise({
            ...server,
            processes: 3,
            maxLifetime: "1500 millis",
            lifetimeJitter: "1500 millis"
          })
          yield* handle.awaitReady
          const firsts = readyOf(events).slice(0, 3)
          const recycles = yield* eventually(() => {
            const mine = recyclingOf(events).filter((r) => firsts.some((f) => f.pid === r.pid))
            return mine.length === 3 ? mine : undefined
          }, "40 seconds")
          const lifetimes = recycles.map((r) => r.reason.lifetimeMillis!)
          for (const r of recycles) {
            assert.strictEqual(r.reason.reason, "lifetime")
            const lifetime = r.reason.lifetimeMillis!
            assert.isAtLeast(lifetime, 1500)
            assert.isAtMost(lifetime, 3000)
            const readyAt = firsts.find((f) => f.pid === r.pid)!.at
            assert.isAtLeast(r.at - readyAt, lifetime - 5, "recycled before its lifetime")
          }
          assert.strictEqual(new Set(lifetimes).size, 3, `the jitter did not spread them: ${lifetimes}`)
          yield* handle.stop
          assert.deepStrictEqual(pidsWithTag(tag), [])
        })
      ),
    60_000
  )

  it.live(
    "a warm spare never serves before it is taken; a dead worker's task id goes to it, another boots; none outlives the supervisor",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const { events, handle, tag } = yield* supervise({ ...server, processes: 2, spares: 1 })
          yield* handle.awaitReady
          const [spare] = yield* eventually(() => {
            const s = Effect.runSync(handle.spares)
            return s.length === 1 ? s : undefined
          })
          assert.isTrue(pidsWithTag(tag).includes(spare!))
          const port = tcpPort(handle.sockets)
          const before: Array<number> = []
          for (let i = 0; i < 40; i++) before.push(answered(yield* getJson({ port })).pid)
          assert.isFalse(before.includes(spare!), "the spare served before it was taken")
          const victim = readyOf(events).find((e) => e.taskId === 0)!
          process.kill(victim.pid, "SIGKILL")
          const taken = yield* eventually(() =>
            ofTag("Started")(events).find((e) => e.spare === true && e.pid === spare)
          )
          assert.strictEqual(taken.taskId, 0)
          // It serves now, as task 0.
          let served: Answered | undefined
          for (let i = 0; i < 400 && served === undefined; i++) {
            const a = answered(yield* getJson({ port }))
            if (a.pid === spare) served = a
          }
          assert.isDefined(served, "the spare never served after it was taken")
          assert.strictEqual((served as { task: string }).task, "0")
          // Another spare boots in the background (waited for, bounded: the test fails if it never does).
          yield* eventually(() => {
            const s = Effect.runSync(handle.spares)
            return s.length === 1 && s[0] !== spare ? s : undefined
          })
          yield* handle.stop
          assert.deepStrictEqual(pidsWithTag(tag), [], "a worker or a spare outlived the supervisor")
        })
      ),
    60_000
  )

  it.live(
    "cluster mode: a spare does not listen, so node:cluster never hands it a connection, until it takes a dead worker's id",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const port = yield* freePort
          const { events, handle, tag } = yield* supervise({
            mode: "cluster",
            command: fixture("cluster-spare.ts"),
            processes: 2,
            spares: 1,
            env: { PORT: String(port) },
            stopTimeout: "5 seconds"
          })
          yield* handle.awaitReady
          const [spare] = yield* eventually(() => {
            const s = Effect.runSync(handle.spares)
            return s.length === 1 ? s : undefined
          })
          const before: Array<number> = []
          for (let i = 0; i < 40; i++) before.push(answered(yield* getJson({ port })).pid)
          assert.isFalse(before.includes(spare!), "the spare served before it was taken")
          const victim = readyOf(events).find((e) => e.taskId === 1)!
          process.kill(victim.pid, "SIGKILL")
          yield* eventually(() => ofTag("Started")(events).find((e) => e.spare === true && e.pid === spare))
          let served: Answered | undefined
          for (let i = 0; i < 400 && served === undefined; i++) {
            const a = answered(yield* getJson({ port }))
            if (a.pid === spare) served = a
          }
          assert.strictEqual((served as { task: string } | undefined)?.task, "1")
          yield* handle.stop
          assert.deepStrictEqual(pidsWithTag(tag), [])
        })
      ),
    60_000
  )

  it.live(
    "any program beats by writing to PREFORK_HEARTBEAT_FD; when it stops it gets SIGABRT, then its group SIGKILL",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const stop = Path.join(dir, "stop")
          // A shell that beats every 200 ms until the file exists, then hangs in `sleep` (a member of its group).
          const script = `while [ ! -e "$1" ]; do printf . >&"$PREFORK_HEARTBEAT_FD"; sleep 0.2; done; sleep 1000`
          const { events, handle, tag } = yield* supervise({
            command: "/bin/sh",
            args: ["-c", script, "sh", stop],
            processes: 1,
            heartbeat: "1500 millis",
            maxRestarts: 0
          })
          const [first] = yield* eventually(() => (readyOf(events).length > 0 ? readyOf(events) : undefined))
          // Beating: alive well past its deadline.
          yield* Effect.sleep("3 seconds")
          assert.deepStrictEqual(exitedOf(events), [])
          writeFileSync(stop, "")
          const error = yield* Effect.flip(handle.await)
          assert.strictEqual(error._tag, "TooManyRestarts")
          const exit = exitedOf(events).find((e) => e.pid === first!.pid)!
          assert.strictEqual(exit.reason?._tag, "Unresponsive")
          if (exit.reason?._tag === "Unresponsive") assert.strictEqual(exit.reason.signal, "SIGABRT")
          assert.deepStrictEqual(exit.status, ExitStatus.signaled("SIGABRT"))
          // The leader and its `sleep`: gone.
          assert.deepStrictEqual(pidsWithTag(tag), [])
        })
      ),
    60_000
  )
})
