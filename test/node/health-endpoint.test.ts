/**
 * `Health.serve` and `Health.delayStop` (the library side of `--health` and
 * `--shutdown-delay`) over a real supervisor of real processes: `/readyz` and
 * `/startupz` follow the workers' readiness, `/readyz` says 503 while
 * draining or stopping, the shutdown delay keeps every worker serving until
 * its end (or until it is cut short), and the endpoint keeps its budget.
 */
import * as Net from "node:net"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Duration, Effect, Fiber, Option } from "effect"
import type { SlotStatus } from "../../src/Model.ts"
import * as Health from "../../src/node/Health.ts"
import type * as Supervisor from "../../src/Supervisor.ts"
import type { SupervisorHandle } from "../../src/Supervisor.ts"
import { TaskId } from "../../src/TaskId.ts"
import { probe, probeUntil as until } from "../helpers/health.ts"
import { assertNoneLeft, eventually, pidsWithTag } from "../helpers/procs.ts"
import { captureLogs, fixture, supervise } from "../helpers/supervise.ts"

const LOCAL = { host: "127.0.0.1", port: 0 }

/** A supervisor of `node forever.js` workers (they run until stopped). */
const forever = (options: Omit<Supervisor.Options, "command" | "args">) =>
  supervise({ command: process.execPath, args: [fixture("forever.js")], ...options })

const slot = (taskId: number, state: SlotStatus["state"]): SlotStatus => ({
  taskId: TaskId(taskId),
  state,
  pid: Option.some(1000 + taskId),
  restarts: 0,
  startedAt: Option.some(0),
  lastExit: Option.none(),
  replacement: Option.none()
})

const state = (slots: ReadonlyArray<SlotStatus> | undefined, extra: Partial<Health.State> = {}): Health.State => ({
  slots: Option.fromUndefinedOr(slots),
  processes: slots?.length ?? 0,
  started: false,
  draining: false,
  minReady: undefined,
  ...extra
})

describe("Health verdicts", () => {
  it("readiness: every slot by default, minReady when given, never while draining, stopping or before the start", () => {
    const cases: ReadonlyArray<readonly [Health.State, boolean, string]> = [
      [state([slot(0, "running"), slot(1, "running")]), true, "ready: 2 of 2 workers ready"],
      [state([slot(0, "running"), slot(1, "restarting")]), false, "not ready: 1 of 2 workers ready, 2 needed"],
      [state([slot(0, "running"), slot(1, "restarting")], { minReady: 1 }), true, "ready: 1 of 2 workers ready"],
      [state([slot(0, "running")], { minReady: 5 }), true, "ready: 1 of 1 worker ready"],
      [state([slot(0, "running"), slot(1, "running")], { draining: true }), false, "draining: stopping soon"],
      [state([slot(0, "stopping"), slot(1, "running")]), false, "stopping: the supervisor is stopping its workers"],
      [state(undefined), false, "starting: the supervisor has not started yet"],
      // A slot being scaled away (task id >= processes) does not count.
      [state([slot(0, "running"), slot(1, "stopping")], { processes: 1 }), true, "ready: 1 of 1 worker ready"]
    ]
    for (const [given, ok, reason] of cases) assert.deepStrictEqual(Health.readiness(given), { ok, reason })
  })

  it("startup: 503 with the count until the first start is over, then 200 for good", () => {
    assert.deepStrictEqual(Health.startup(state([slot(0, "running"), slot(1, "starting")])), {
      ok: false,
      reason: "starting: 1 of 2 workers ready"
    })
    assert.deepStrictEqual(Health.startup(state([slot(0, "restarting")], { started: true })), {
      ok: true,
      reason: "started"
    })
  })
})

describe("Health.serve (real processes)", () => {
  it.live("startupz and readyz follow readiness; livez answers; drain makes readyz 503 and nothing else", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const pending = yield* Deferred.make<SupervisorHandle>()
        // Listening before the supervisor exists: it says so.
        const health = yield* Health.serve(pending, LOCAL)
        const port = health.address.port
        assert.strictEqual(health.url, `http://127.0.0.1:${port}`)
        assert.deepStrictEqual(yield* probe(port, "/readyz"), {
          status: 503,
          body: "starting: the supervisor has not started yet\n"
        })
        assert.deepStrictEqual(yield* probe(port, "/livez"), { status: 200, body: "live\n" })
        const { handle, tag } = yield* forever({
          processes: 2,
          ready: { delay: "2 seconds" },
          stopTimeout: "2 seconds"
        })
        yield* Deferred.succeed(pending, handle)
        const early = yield* probe(port, "/startupz")
        assert.strictEqual(early.status, 503)
        assert.match(early.body, /^starting: [01] of 2 workers ready\n$/)
        yield* handle.awaitReady
        assert.deepStrictEqual(yield* until(port, "/startupz", 200), { status: 200, body: "started\n" })
        assert.deepStrictEqual(yield* probe(port, "/readyz"), { status: 200, body: "ready: 2 of 2 workers ready\n" })
        assert.deepStrictEqual(yield* probe(port, "/readyz", "HEAD"), { status: 200, body: "" })
        assert.strictEqual((yield* probe(port, "/readyz", "POST")).status, 405)
        assert.strictEqual((yield* probe(port, "/metrics")).status, 404)
        yield* health.drain
        assert.deepStrictEqual(yield* probe(port, "/readyz"), { status: 503, body: "draining: stopping soon\n" })
        assert.deepStrictEqual(yield* probe(port, "/livez"), { status: 200, body: "live\n" })
        assert.strictEqual((yield* probe(port, "/startupz")).status, 200)
        assert.strictEqual(pidsWithTag(tag).length, 2)
        yield* handle.stop
        yield* assertNoneLeft(tag)
      })
    )
  )

  it.live("a worker that dies makes readyz 503 until its replacement is ready (default: every slot)", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const { handle, tag } = yield* forever({
          processes: 2,
          ready: { delay: "300 millis" },
          backoff: { initial: "300 millis" },
          stopTimeout: "2 seconds"
        })
        const health = yield* Health.serve(handle, LOCAL)
        const relaxed = yield* Health.serve(handle, LOCAL, { minReady: 1 })
        yield* handle.awaitReady
        const [victim] = pidsWithTag(tag)
        process.kill(victim!, "SIGKILL")
        const down = yield* until(health.address.port, "/readyz", 503)
        assert.match(down.body, /^not ready: 1 of 2 workers ready, 2 needed\n$/)
        // One ready worker is enough for minReady: 1.
        assert.deepStrictEqual(yield* probe(relaxed.address.port, "/readyz"), {
          status: 200,
          body: "ready: 1 of 2 workers ready\n"
        })
        yield* handle.awaitReady
        assert.strictEqual((yield* until(health.address.port, "/readyz", 200)).status, 200)
        yield* handle.stop
        yield* assertNoneLeft(tag)
      })
    )
  )

  it.live(
    "the connection budget: a client that sends no head gets 408, idle clients at the cap do not keep a probe out",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const { handle, tag } = yield* forever({
            processes: 1
          })
          const health = yield* Health.serve(handle, LOCAL, {
            limits: { headTimeout: 300, connectionTimeout: 2_000, maxConnections: 4 }
          })
          const port = health.address.port
          // Eight clients connect and send nothing: twice the cap.
          const idle = yield* Effect.acquireRelease(
            Effect.sync(() => new Set<Net.Socket>()),
            (sockets) => Effect.sync(() => sockets.forEach((s) => s.destroy()))
          )
          for (let i = 0; i < 8; i++) {
            yield* Effect.callback<void>((resume) => {
              const s = Net.connect({ host: "127.0.0.1", port }, () => resume(Effect.void))
              s.on("error", () => resume(Effect.void))
              idle.add(s)
            })
          }
          const probed = yield* probe(port, "/livez")
          assert.deepStrictEqual(probed, { status: 200, body: "live\n" })
          // Half a head, never finished: answered 408 at the head deadline.
          const slow = yield* Effect.callback<string>((resume) => {
            let got = ""
            const s = Net.connect({ host: "127.0.0.1", port }, () => s.write("GET /readyz HTTP/1.1\r\n"))
            s.setEncoding("latin1")
            s.on("data", (c: string) => (got += c))
            s.on("error", () => {})
            s.on("close", () => resume(Effect.succeed(got)))
          })
          assert.match(slow, /^HTTP\/1\.1 408 /)
          yield* handle.stop
          yield* assertNoneLeft(tag)
        })
      )
  )

  it.live("a bad minReady is InvalidOptions; a busy port is BindFailed naming --health", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const { handle, tag } = yield* forever({
          processes: 1
        })
        const bad = yield* Effect.flip(Health.serve(handle, LOCAL, { minReady: 0 }))
        assert.strictEqual(bad._tag, "InvalidOptions")
        const first = yield* Health.serve(handle, LOCAL)
        const busy = yield* Effect.flip(Health.serve(handle, { host: "127.0.0.1", port: first.address.port }))
        assert.strictEqual(busy._tag, "BindFailed")
        assert.include(busy.message, `--health: cannot listen on 127.0.0.1:${first.address.port}: EADDRINUSE`)
        yield* handle.stop
        yield* assertNoneLeft(tag)
      })
    )
  )
})

describe("Health.delayStop (real processes)", () => {
  /** A supervised program that serves health and delays its stop; interrupted by the test, as SIGTERM does. */
  const program = (
    delay: Duration.Input,
    cut: Deferred.Deferred<void>,
    report: Deferred.Deferred<{ port: number; tag: string }>
  ) =>
    Effect.scoped(
      Effect.gen(function* () {
        const { handle, tag } = yield* forever({
          processes: 2,
          stopTimeout: "2 seconds"
        })
        const health = yield* Health.serve(handle, LOCAL)
        yield* Health.delayStop(delay, { health, cut })
        yield* handle.awaitReady
        yield* Deferred.succeed(report, { port: health.address.port, tag })
        return yield* handle.await
      })
    )

  it.live("on interruption readyz says 503 at once and every worker keeps running until the delay is cut short", () =>
    Effect.gen(function* () {
      const logs = captureLogs()
      const cut = yield* Deferred.make<void>()
      const report = yield* Deferred.make<{ port: number; tag: string }>()
      const fiber = yield* Effect.forkChild(program("1 hour", cut, report).pipe(Effect.provide(logs.layer)))
      const { port, tag } = yield* Deferred.await(report)
      assert.strictEqual((yield* probe(port, "/readyz")).status, 200)
      const stopping = yield* Effect.forkChild(Fiber.interrupt(fiber))
      const during = yield* eventually(() =>
        logs.captured.lines.some((l) => l.startsWith("Shutdown delay: workers serve 1h more")) ? true : undefined
      )
      assert.isTrue(during)
      assert.deepStrictEqual(yield* probe(port, "/readyz"), { status: 503, body: "draining: stopping soon\n" })
      assert.strictEqual((yield* probe(port, "/livez")).status, 200)
      assert.strictEqual(pidsWithTag(tag).length, 2, "every worker still runs during the delay")
      yield* Deferred.succeed(cut, undefined)
      yield* Fiber.join(stopping)
      assert.include(logs.captured.lines, "Shutdown delay cut short: stopping the workers")
      assert.deepStrictEqual(pidsWithTag(tag), [])
      assert.strictEqual((yield* probe(port, "/livez")).error, "ECONNREFUSED")
    })
  )

  it.live("the delay ends by itself; a supervision that ends without interruption is not delayed", () =>
    Effect.gen(function* () {
      const logs = captureLogs()
      const cut = yield* Deferred.make<void>()
      const report = yield* Deferred.make<{ port: number; tag: string }>()
      const fiber = yield* Effect.forkChild(program("300 millis", cut, report).pipe(Effect.provide(logs.layer)))
      const { tag } = yield* Deferred.await(report)
      yield* Fiber.interrupt(fiber)
      assert.include(logs.captured.lines, "Shutdown delay over: stopping the workers")
      assert.isTrue(yield* Deferred.isDone(cut))
      yield* assertNoneLeft(tag)

      // Every worker exits 0: the scope closes with a success, and an hour's delay is not waited for.
      const quietLogs = captureLogs()
      yield* Effect.scoped(
        Effect.gen(function* () {
          const { handle } = yield* supervise({
            command: process.execPath,
            args: [fixture("exit.js"), "0"],
            processes: 1
          })
          yield* Health.delayStop("1 hour")
          return yield* handle.await
        })
      ).pipe(Effect.provide(quietLogs.layer))
      assert.notInclude(quietLogs.captured.lines.join("\n"), "Shutdown delay")
    })
  )
})
