/**
 * The HTTP drain of Node workers (issue 19 item 1, FAULTS row 47), run as a
 * user would: unmodified node:http, express and fastify apps that call
 * `listen(PORT)` themselves, with no SIGTERM handler and no fd numbers, lose
 * no request of a steady keep-alive load across a reload, in `--listen` and
 * `--cluster` modes; a worker's own SIGTERM handler still runs; a request
 * longer than the stop timeout is the one thing cut, and the log says so;
 * `--no-drain` gives back Node's default (SIGTERM kills at once).
 */
import { readFileSync } from "node:fs"
import { Agent, type IncomingHttpHeaders, request } from "node:http"
import * as Net from "node:net"
import * as Path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { pidsWithTag } from "../helpers/procs.ts"
import { tempDir } from "../helpers/supervise.ts"
import { fixture, prefork, stderrHas } from "./prefork.ts"

/** A port free a moment ago on 127.0.0.1: the app must be told it (PORT) before prefork binds it. */
const freePort = Effect.callback<number>((resume) => {
  const s = Net.createServer().listen(0, "127.0.0.1", () => {
    const port = (s.address() as Net.AddressInfo).port
    s.close(() => resume(Effect.succeed(port)))
  })
})

interface Answer {
  readonly status?: number
  readonly pid?: number
  readonly headers?: IncomingHttpHeaders
  readonly error?: string
}

/** One GET, bounded in time: the status, the `pid` of the JSON body and the headers, or the error's code. */
const get = (port: number, path: string, agent: Agent | false = false) =>
  new Promise<Answer>((resolve) => {
    const req = request({ host: "127.0.0.1", port, path, agent, timeout: 30_000 }, (res) => {
      let body = ""
      res.setEncoding("utf8")
      res.on("data", (chunk: string) => (body += chunk))
      res.on("end", () => {
        let pid: number | undefined
        try {
          pid = (JSON.parse(body) as { pid?: number }).pid
        } catch {
          // not JSON: the status says what happened
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, ...(pid === undefined ? {} : { pid }) })
      })
      res.on("error", (error: NodeJS.ErrnoException) => resolve({ error: error.code ?? error.message }))
    })
    req.on("timeout", () => req.destroy(Object.assign(new Error("timeout"), { code: "ETIMEDOUT" })))
    req.on("error", (error: NodeJS.ErrnoException) => resolve({ error: error.code ?? error.message }))
    req.end()
  })

/** Polls (bounded) until a GET is answered 200. */
const served = (port: number) =>
  Effect.gen(function* () {
    for (let i = 0; i < 200; i++) {
      const answer = yield* Effect.promise(() => get(port, "/"))
      if (answer.status === 200) return
      yield* Effect.sleep(50)
    }
    return yield* Effect.die(new Error(`port ${port} never answered 200`))
  })

/**
 * A steady keep-alive load: `clients` loops, each sending its next GET as
 * soon as the last is answered, through one Agent with keep-alive (at most
 * `clients` sockets). Bounded: 100,000 requests per loop at most.
 */
const keepAliveLoad = (port: number, clients = 8) => {
  const agent = new Agent({ keepAlive: true, maxSockets: clients })
  const stats = { ok: 0, failed: [] as Array<string>, pids: new Set<number>() }
  const state = { running: true }
  const loops = Array.from({ length: clients }, async () => {
    for (let i = 0; i < 100_000 && state.running; i++) {
      const answer = await get(port, "/", agent)
      if (answer.status !== undefined && answer.status >= 200 && answer.status < 300) {
        stats.ok++
        if (answer.pid !== undefined) stats.pids.add(answer.pid)
      } else stats.failed.push(answer.error ?? `status ${answer.status}`)
    }
  })
  const stop = Effect.promise(async () => {
    state.running = false
    await Promise.all(loops)
    agent.destroy()
  })
  return { stats, stop }
}

/** Waits (bounded) until the load has had `n` more answers than now. */
const moreAnswers = (stats: { readonly ok: number }, n: number) =>
  Effect.gen(function* () {
    const target = stats.ok + n
    for (let i = 0; i < 600 && stats.ok < target; i++) yield* Effect.sleep(50)
    if (stats.ok < target) return yield* Effect.die(new Error(`the load stalled at ${stats.ok} answers`))
  })

const cases = [
  { app: "http.js", mode: "--listen" },
  { app: "http.js", mode: "--cluster" },
  { app: "express.js", mode: "--listen" },
  { app: "fastify.js", mode: "--cluster" }
] as const

describe("the HTTP drain of Node workers (real processes)", () => {
  for (const { app, mode } of cases) {
    it.live(`${app} ${mode}: a keep-alive load across a reload loses no request; every worker replaced`, () =>
      Effect.scoped(
        Effect.gen(function* () {
          const port = yield* freePort
          const where = mode === "--listen" ? ["--listen", `127.0.0.1:${port}`] : ["--cluster"]
          const p = yield* prefork(["-n", "2", ...where, "--", "node", fixture(`drain/${app}`)], {
            env: { PORT: String(port) }
          })
          yield* served(port)
          const load = keepAliveLoad(port)
          yield* moreAnswers(load.stats, 200)
          const before = new Set(load.stats.pids)
          p.signal("SIGHUP")
          yield* stderrHas(p, "Reload finished", "30 seconds")
          load.stats.pids.clear()
          yield* moreAnswers(load.stats, 200)
          yield* load.stop
          assert.deepStrictEqual(load.stats.failed, [], p.stderr())
          // Only new workers answer after the reload; the old ones are gone.
          for (const pid of load.stats.pids) assert.isFalse(before.has(pid), `old worker ${pid} still answering`)
          const live = pidsWithTag(p.tag)
          for (const pid of before) assert.notInclude(live, pid)
          assert.notInclude(p.stderr(), "EADDRINUSE")
          assert.notInclude(p.stderr(), "sending SIGKILL")
          p.signal("SIGTERM")
          assert.deepStrictEqual(yield* p.exit, { code: 0, signal: null })
        })
      )
    )
  }

  it.live(
    "an unmodified app's listen(PORT) under --listen 127.0.0.1:PORT serves the owned socket in every worker",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const log = Path.join(dir, "log")
          const port = yield* freePort
          const p = yield* prefork(
            ["-n", "2", "--listen", `127.0.0.1:${port}`, "--", "node", fixture("drain/http.js")],
            { env: { PORT: String(port), DRAIN_LOG: log } }
          )
          yield* stderrHas(p, `Listening on 127.0.0.1:${port}`)
          yield* served(port)
          // Both workers listened (neither got EADDRINUSE), on the socket prefork holds: the port stays served
          // with every worker killed at once, by the replacements.
          yield* Effect.gen(function* () {
            for (let i = 0; i < 100; i++) {
              if (readFileSync(log, "utf8").trim().split("\n").length >= 2) return
              yield* Effect.sleep(50)
            }
          })
          const workers = readFileSync(log, "utf8").trim().split("\n")
          assert.strictEqual(workers.length, 2, p.stderr())
          for (const pid of workers.map((line) => Number(line.split(" ")[1]))) process.kill(pid, "SIGKILL")
          const answer = yield* Effect.promise(() => get(port, "/"))
          assert.strictEqual(answer.status, 200, JSON.stringify(answer))
          assert.notInclude(p.stderr(), "EADDRINUSE")
          p.signal("SIGTERM")
          assert.strictEqual((yield* p.exit).code, 0)
        })
      )
  )

  it.live("a worker's own SIGTERM handler runs, and the worker still drains: the request in flight is answered", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const dir = yield* tempDir
        const log = Path.join(dir, "log")
        const port = yield* freePort
        const p = yield* prefork(
          ["-n", "1", "--listen", `127.0.0.1:${port}`, "--", "node", fixture("drain/own-handler.js")],
          { env: { PORT: String(port), DRAIN_LOG: log } }
        )
        yield* served(port)
        const slow = get(port, "/?ms=1000")
        yield* Effect.sleep(200)
        p.signal("SIGTERM")
        const answer = yield* Effect.promise(() => slow)
        assert.strictEqual(answer.status, 200, JSON.stringify(answer))
        assert.strictEqual(answer.headers?.connection, "close")
        assert.strictEqual((yield* p.exit).code, 0)
        assert.match(readFileSync(log, "utf8"), new RegExp(`^term ${answer.pid}\\n$`))
        assert.notInclude(p.stderr(), "sending SIGKILL")
      })
    )
  )

  it.live("a request longer than the stop timeout is the one thing cut, and the log says so", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const port = yield* freePort
        const p = yield* prefork(
          ["-n", "1", "--stop-timeout", "1s", "--listen", `127.0.0.1:${port}`, "--", "node", fixture("drain/http.js")],
          { env: { PORT: String(port) } }
        )
        yield* served(port)
        const long = get(port, "/?ms=20000")
        const short = get(port, "/?ms=300")
        yield* Effect.sleep(100)
        p.signal("SIGTERM")
        const [cut, answered] = yield* Effect.promise(() => Promise.all([long, short]))
        assert.strictEqual(answered.status, 200, JSON.stringify(answered))
        assert.strictEqual(answered.headers?.connection, "close")
        assert.isDefined(cut.error, JSON.stringify(cut))
        yield* p.exit
        assert.match(
          p.stderr(),
          /child 0 \(pid \d+\) still running 1000 ms after SIGTERM while draining 1 HTTP connection, sending SIGKILL/
        )
      })
    )
  )

  it.live("--no-drain: Node's default, SIGTERM kills a worker at once and its request in flight is lost", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const port = yield* freePort
        const p = yield* prefork(["-n", "1", "--cluster", "--no-drain", "--", "node", fixture("drain/http.js")], {
          env: { PORT: String(port) }
        })
        yield* served(port)
        const slow = get(port, "/?ms=3000")
        yield* Effect.sleep(200)
        p.signal("SIGTERM")
        const answer = yield* Effect.promise(() => slow)
        assert.isDefined(answer.error, JSON.stringify(answer))
        assert.strictEqual((yield* p.exit).code, 0)
        assert.notInclude(p.stderr(), "sending SIGKILL")
      })
    )
  )
})
