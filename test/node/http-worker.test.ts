/**
 * `HttpWorker.layer` (effect-prefork/http) end to end: an Effect HTTP server
 * (effect/http on @effect/platform-node) as supervised workers on the
 * supervisor's socket, with no fd number in its code. It says it is ready
 * once it listens (a reload gated on `ready: "message"` completes), and a
 * reload under keep-alive load loses no request: a request in flight on an
 * old worker finishes, and the old workers end by themselves (no SIGKILL).
 * Outside a supervisor the same program serves its fallback port.
 */
import { spawn } from "node:child_process"
import { existsSync } from "node:fs"
import { Agent, request } from "node:http"
import * as Net from "node:net"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import * as HttpWorker from "../../src/node/HttpWorker.ts"
import { tcpPort } from "../helpers/http.ts"
import { assertNoneLeft, eventually, makeTag } from "../helpers/procs.ts"
import { fixture, supervise, tempDir } from "../helpers/supervise.ts"

interface Answer {
  readonly status: number
  readonly pid?: number
  readonly error?: string
}

/** One GET with `agent` (keep-alive when it is), bounded in time: the status and the answering pid, or the error. */
const get = (port: number, path: string, agent: Agent | false) =>
  Effect.callback<Answer>((resume) => {
    const req = request({ host: "127.0.0.1", port, path, agent, timeout: 15_000 }, (res) => {
      let body = ""
      res.setEncoding("utf8")
      res.on("data", (chunk: string) => (body += chunk))
      res.on("end", () => {
        try {
          resume(Effect.succeed({ status: res.statusCode ?? 0, pid: (JSON.parse(body) as { pid: number }).pid }))
        } catch {
          resume(Effect.succeed({ status: res.statusCode ?? 0, error: `not JSON: ${body}` }))
        }
      })
      res.on("error", (error: NodeJS.ErrnoException) =>
        resume(Effect.succeed({ status: 0, error: error.code ?? error.message }))
      )
    })
    req.on("timeout", () => req.destroy(Object.assign(new Error("timeout"), { code: "ETIMEDOUT" })))
    req.on("error", (error: NodeJS.ErrnoException) =>
      resume(Effect.succeed({ status: 0, error: error.code ?? error.message }))
    )
    req.end()
  })

describe("HttpWorker.listenOptions", () => {
  it("the first inherited socket, one by name, or the fallback port outside a supervisor", () => {
    const sockets = [
      { fd: 3, name: "127.0.0.1_8080" },
      { fd: 4, name: "admin" }
    ]
    assert.deepStrictEqual(HttpWorker.listenOptions(sockets), { fd: 3 })
    assert.deepStrictEqual(HttpWorker.listenOptions(sockets, { socket: "admin", port: 1 }), { fd: 4 })
    assert.deepStrictEqual(HttpWorker.listenOptions([], { port: 8081, host: "127.0.0.1" }), {
      port: 8081,
      host: "127.0.0.1"
    })
    assert.deepStrictEqual(HttpWorker.listenOptions([]), { port: 3000 })
    assert.deepStrictEqual(HttpWorker.listenOptions(sockets, { socket: "nope" }), {
      error: "no inherited socket named nope (there are: 127.0.0.1_8080, admin)"
    })
  })
})

describe("HttpWorker.layer (real processes)", () => {
  it.live(
    "workers on the owned socket, ready once listening; a reload under keep-alive load loses nothing and lets a request in flight finish",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const { events, handle, tag } = yield* supervise({
            mode: "module",
            command: fixture("effect-http-worker.ts"),
            args: ["0", dir],
            processes: 2,
            listen: ["127.0.0.1:0"],
            ready: "message",
            readyTimeout: "30 seconds",
            stopTimeout: "20 seconds"
          })
          const port = tcpPort(handle.sockets)
          yield* handle.awaitReady
          const first = yield* get(port, "/", false)
          assert.strictEqual(first.status, 200)
          const old = events.flatMap((e) => (e._tag === "Ready" ? [e.pid] : []))
          assert.include(old, first.pid)

          // Four keep-alive clients, one request at a time each, until the reload is over (bounded in count).
          const agents = Array.from({ length: 4 }, () => new Agent({ keepAlive: true, maxSockets: 1 }))
          yield* Effect.addFinalizer(() => Effect.sync(() => agents.forEach((a) => a.destroy())))
          const load = { running: true }
          const answers: Array<Answer> = []
          const clients = yield* Effect.forkChild(
            Effect.forEach(
              agents,
              (agent) =>
                Effect.gen(function* () {
                  for (let i = 0; i < 200_000 && load.running; i++) answers.push(yield* get(port, "/", agent))
                }),
              { concurrency: "unbounded", discard: true }
            )
          )
          // A request still running on an old worker when the reload stops it.
          // A request still running on an old worker when the reload stops it: answered once its worker got SIGTERM.
          const slow = yield* Effect.forkChild(get(port, "/until-stopped", false))
          yield* eventually(() => (answers.length >= 20 ? true : undefined), "15 seconds")
          yield* handle.reload()
          const after = answers.length
          yield* eventually(() => (answers.length >= after + 20 ? true : undefined), "15 seconds")
          load.running = false
          yield* Fiber.join(clients)

          const failed = answers.filter((a) => a.status !== 200)
          assert.deepStrictEqual(failed, [], `${failed.length} of ${answers.length} requests failed`)
          const served = new Set(answers.map((a) => a.pid))
          const replacements = events.flatMap((e) => (e._tag === "Ready" && !old.includes(e.pid) ? [e.pid] : []))
          assert.strictEqual(replacements.length, 2)
          assert.isTrue(
            replacements.some((pid) => served.has(pid)),
            "the replacements served"
          )
          const slowAnswer = yield* Fiber.join(slow)
          assert.strictEqual(slowAnswer.status, 200, slowAnswer.error)
          assert.include(old, slowAnswer.pid)
          // The old workers drained and ended by themselves: their server closed, and no SIGKILL was needed.
          for (const pid of old) assert.isTrue(existsSync(`${dir}/stopped-${pid}`), `worker ${pid} closed its server`)
          for (const e of events) {
            if (e._tag === "Exited") assert.isFalse(e.status._tag === "Signaled" && e.status.signal === "SIGKILL")
          }
          yield* handle.stop
          yield* assertNoneLeft(tag)
        })
      ),
    90_000
  )

  it.live("outside a supervisor the same program serves its fallback port, and SIGTERM closes it", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const dir = yield* tempDir
        // A free port: bound to 0, then released.
        const port = yield* Effect.callback<number>((resume) => {
          const probe = Net.createServer().listen(0, "127.0.0.1", () => {
            const { port } = probe.address() as Net.AddressInfo
            probe.close(() => resume(Effect.succeed(port)))
          })
        })
        const { env, tag } = makeTag()
        const child = yield* Effect.acquireRelease(
          Effect.sync(() =>
            spawn(process.execPath, [fixture("effect-http-worker.ts"), String(port), dir], {
              env: { ...process.env, ...env },
              stdio: "ignore"
            })
          ),
          (child) => Effect.sync(() => child.exitCode === null && child.signalCode === null && child.kill("SIGKILL"))
        )
        const exited = Effect.callback<number | null>((resume) => {
          if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.succeed(child.exitCode))
          child.once("exit", (code) => resume(Effect.succeed(code)))
        })
        let answer: Answer = { status: 0 }
        for (let i = 0; i < 300 && answer.status !== 200; i++) {
          answer = yield* get(port, "/", false)
          if (answer.status !== 200) yield* Effect.sleep(50)
        }
        assert.strictEqual(answer.status, 200)
        assert.strictEqual(answer.pid, child.pid)
        child.kill("SIGTERM")
        yield* exited.pipe(Effect.timeout("20 seconds"))
        assert.isTrue(existsSync(`${dir}/stopped-${child.pid}`))
        yield* assertNoneLeft(tag)
      })
    )
  )
})
