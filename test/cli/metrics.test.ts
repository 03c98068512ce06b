/**
 * `prefork --metrics` and the health options (`--heartbeat`, `--max-memory`,
 * `--max-lifetime`, `--lifetime-jitter`, `--spares`), run as a user runs
 * them: the real bin, real workers, scrapes over 127.0.0.1 checked by
 * `promtool check metrics`, and bad values refused with exit code 2.
 */
import { spawnSync } from "node:child_process"
import { readFileSync } from "node:fs"
import { request } from "node:http"
import * as Net from "node:net"
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Option } from "effect"
import * as Command from "../../src/cli/Command.ts"
import { busyPort } from "../helpers/http.ts"
import { tempDir } from "../helpers/supervise.ts"
import { input } from "./input.ts"
import { awaitEvents, events, fixture, prefork, stderrHas } from "./prefork.ts"

interface Response {
  readonly status: number
  readonly contentType: string | undefined
  readonly body: string
}

/** One GET, bounded in time: the answer, or the connection error's code. */
const get = (url: string) =>
  Effect.callback<Response | { readonly error: string }>((resume) => {
    const req = request(url, { agent: false, timeout: 10_000 }, (res) => {
      let body = ""
      res.setEncoding("utf8")
      res.on("data", (chunk: string) => (body += chunk))
      res.on("end", () =>
        resume(Effect.succeed({ status: res.statusCode ?? 0, contentType: res.headers["content-type"], body }))
      )
    })
    req.on("timeout", () => req.destroy(Object.assign(new Error("timeout"), { code: "ETIMEDOUT" })))
    req.on("error", (error: NodeJS.ErrnoException) => resume(Effect.succeed({ error: error.code ?? error.message })))
    req.end()
  })

const ok = (answer: Response | { readonly error: string }): Response => {
  if ("error" in answer) throw new Error(`scrape failed: ${answer.error}`)
  return answer
}

/** Scrapes until `predicate` holds (bounded), returning that body. */
const scrapeUntil = (url: string, predicate: (body: string) => boolean, within: Duration.Input = "15 seconds") =>
  Effect.gen(function* () {
    const deadline = Date.now() + Duration.toMillis(Duration.fromInputUnsafe(within))
    let last = ""
    while (Date.now() < deadline) {
      const answer = yield* get(url)
      if (!("error" in answer)) {
        last = answer.body
        if (predicate(last)) return last
      }
      yield* Effect.sleep("50 millis")
    }
    return yield* Effect.die(
      new Error(`no scrape matched within ${Duration.format(Duration.fromInputUnsafe(within))}:\n${last}`)
    )
  })

// .ci/run installs promtool; on a machine without it the check is skipped, in CI it never is.
const hasPromtool = spawnSync("promtool", ["--version"], { stdio: "ignore" }).status === 0

/** `promtool check metrics` on a body: exit 0 and nothing said, or the test fails with what it said. */
const promtool = (body: string) => {
  if (!hasPromtool && process.env["CI"] === undefined) return
  const r = spawnSync("promtool", ["check", "metrics"], { input: body, encoding: "utf8", timeout: 20_000 })
  if (r.error !== undefined) throw new Error(`promtool: ${r.error.message} (apt-get install prometheus; .ci/run does)`)
  assert.strictEqual(`${r.stdout}${r.stderr}`, "", body)
  assert.strictEqual(r.status, 0, body)
}

/** Sends `data` on a fresh connection and returns the status line of what comes back before the server closes it. */
const raw = (port: number, data: string) =>
  Effect.callback<string>((resume) => {
    let got = ""
    const socket = Net.connect({ host: "127.0.0.1", port }, () => socket.write(data))
    socket.setTimeout(10_000)
    socket.setEncoding("latin1")
    socket.on("data", (chunk: string) => (got += chunk))
    socket.once("timeout", () => socket.destroy())
    socket.once("close", () => resume(Effect.succeed(got.split("\r\n")[0] ?? "")))
    socket.once("error", () => {})
  })

/** Whether a TCP connection to the port is refused (nothing listens). */
const refused = (port: number) =>
  Effect.callback<boolean>((resume) => {
    const socket = Net.connect({ host: "127.0.0.1", port })
    socket.setTimeout(5_000)
    socket.once("connect", () => {
      socket.destroy()
      resume(Effect.succeed(false))
    })
    socket.once("timeout", () => {
      socket.destroy()
      resume(Effect.succeed(false))
    })
    socket.once("error", (error: NodeJS.ErrnoException) => resume(Effect.succeed(error.code === "ECONNREFUSED")))
  })

const METRICS_LINE = /Metrics on (http:\/\/127\.0\.0\.1:(\d+)\/metrics)/

describe("prefork --metrics (real processes)", () => {
  it.live(
    "serves /metrics before the workers start, in Prometheus text that promtool accepts; 404 elsewhere; closed once prefork exits",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const p = yield* prefork(["-n", "2", "--metrics", "127.0.0.1:0", "--", "node", fixture("cli-worker.js"), dir])
          yield* stderrHas(p, METRICS_LINE)
          const [, url, port] = METRICS_LINE.exec(p.stderr())!
          // Said (and so listening) before any worker was started.
          yield* stderrHas(p, "Starting 2 processes")
          assert.isBelow(p.stderr().indexOf("Metrics on"), p.stderr().indexOf("Starting 2 processes"))
          yield* awaitEvents(dir, 2, ([e]) => e === "ready")

          const first = ok(yield* get(url!))
          assert.strictEqual(first.status, 200)
          assert.strictEqual(first.contentType, "text/plain; version=0.0.4; charset=utf-8")
          promtool(first.body)
          assert.include(first.body, "# TYPE prefork_worker_restarts_total counter\n")
          assert.include(first.body, 'prefork_worker_restarts_total{reason="exit"} 0\n')
          assert.include(first.body, "# TYPE prefork_worker_spawn_duration_seconds histogram\n")

          const elsewhere = ok(yield* get(url!.replace(/\/metrics$/, "/other")))
          assert.strictEqual(elsewhere.status, 404)
          assert.strictEqual(ok(yield* get(`${url}x`)).status, 404)
          // One request per connection, closed after the answer; whatever a client sends, prefork only answers it.
          const at = Number(port)
          assert.strictEqual(yield* raw(at, "GET /metrics?x=1 HTTP/1.0\r\n\r\n"), "HTTP/1.1 200 OK")
          assert.strictEqual(yield* raw(at, "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), "HTTP/1.1 200 OK")
          assert.strictEqual(
            yield* raw(at, "POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            "HTTP/1.1 405 Method Not Allowed"
          )
          assert.strictEqual(yield* raw(at, "garbage\r\n\r\n"), "HTTP/1.1 400 Bad Request")
          assert.strictEqual(
            yield* raw(at, `GET /metrics HTTP/1.1\r\nX: ${"a".repeat(20_000)}\r\n\r\n`),
            "HTTP/1.1 431 Request Header Fields Too Large"
          )

          p.signal("SIGTERM")
          const { code } = yield* p.exit
          assert.strictEqual(code, 0, p.stderr())
          assert.isTrue(yield* refused(Number(port)), "the metrics port is still open after prefork exited")
        })
      )
  )

  it.live(
    "counts the running workers, and a killed worker's restart (reason exit), in scrapes that promtool accepts",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const p = yield* prefork(["-n", "2", "--metrics", "127.0.0.1:0", "--", "node", fixture("cli-worker.js"), dir])
          yield* stderrHas(p, METRICS_LINE)
          const url = METRICS_LINE.exec(p.stderr())![1]!
          yield* awaitEvents(dir, 2, ([e]) => e === "ready")
          const running = yield* scrapeUntil(url, (body) => body.includes('prefork_workers{state="running"} 2\n'))
          promtool(running)

          const victim = events(dir).find(([e, task]) => e === "start" && task === 1)![2]
          process.kill(victim, "SIGKILL")
          yield* stderrHas(p, `child 1 (pid ${victim}) killed by signal 9, restarting`)
          const restarted = yield* scrapeUntil(url, (body) =>
            body.includes('prefork_worker_restarts_total{reason="exit"} 1\n')
          )
          promtool(restarted)
          yield* scrapeUntil(url, (body) => body.includes('prefork_workers{state="running"} 2\n'))

          p.signal("SIGTERM")
          assert.strictEqual((yield* p.exit).code, 0, p.stderr())
        })
      )
  )

  it.live("a --metrics address that cannot be bound: exit 4, said clearly, no worker started", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const port = yield* busyPort
        const dir = yield* tempDir
        const p = yield* prefork(["--metrics", `127.0.0.1:${port}`, "--", "node", fixture("cli-worker.js"), dir])
        const { code } = yield* p.exit
        assert.strictEqual(code, 4, p.stderr())
        assert.include(p.stderr(), `--metrics: cannot listen on 127.0.0.1:${port}: EADDRINUSE`)
        assert.notInclude(p.stderr(), "Starting")
        assert.deepStrictEqual(events(dir), [])
      })
    )
  )

  describe("bad values: exit code 2, what was wrong, nothing started", () => {
    const cases: ReadonlyArray<readonly [string, ReadonlyArray<string>, string]> = [
      [
        "--metrics without a port",
        ["--metrics", "localhost", "--", "node", "x.js"],
        `Invalid value for flag --metrics: "localhost". Expected: host:port or :port`
      ],
      [
        "--metrics with a port out of range",
        ["--metrics", "127.0.0.1:65536", "--", "node", "x.js"],
        `Invalid value for flag --metrics: "127.0.0.1:65536"`
      ],
      [
        "--heartbeat 0",
        ["--heartbeat", "0", "--", "node", "x.js"],
        `Invalid value for flag --heartbeat: "0". Expected: a duration above 0`
      ],
      [
        "--max-memory with an unknown unit",
        ["--max-memory", "12X", "--", "node", "x.js"],
        `Invalid value for flag --max-memory: "12X". Expected: a size such as 512M`
      ],
      [
        "--max-lifetime without a unit",
        ["--max-lifetime", "60", "--", "node", "x.js"],
        `Invalid value for flag --max-lifetime: "60"`
      ],
      [
        "--spares that is not a whole number",
        ["--spares", "two", "--", "node", "x.js"],
        `Invalid value for flag --spares: "two"`
      ],
      [
        "--lifetime-jitter without --max-lifetime",
        ["--lifetime-jitter", "1m", "--", "node", "x.js"],
        "--lifetime-jitter needs --max-lifetime <duration>"
      ],
      [
        "--spares for a command that cannot wait for its task id",
        ["--spares", "2", "--", "python3", "x.py"],
        "--spares keeps Node workers booted until they get a task id over IPC: prefork --spares 1 -- node app.js"
      ]
    ]
    for (const [name, args, message] of cases) {
      it.live(name, () =>
        Effect.scoped(
          Effect.gen(function* () {
            const p = yield* prefork(args)
            const { code } = yield* p.exit
            assert.strictEqual(code, 2, p.stderr())
            assert.include(p.stderr(), message)
            assert.include(p.stderr(), "Run 'prefork --help' for every option and its default.")
            assert.notInclude(p.stderr(), "Starting")
            assert.notInclude(p.stderr(), "Metrics on")
          })
        )
      )
    }
  })
})

describe("the health options reach the supervisor", () => {
  it.effect("--heartbeat, --max-memory, --max-lifetime, --lifetime-jitter and --spares become Supervisor options", () =>
    Effect.gen(function* () {
      const options = yield* Command.toOptions(
        input({
          heartbeat: Option.some(Duration.seconds(10)),
          maxMemory: Option.some(512 * 2 ** 20),
          maxLifetime: Option.some(Duration.hours(6)),
          lifetimeJitter: Option.some(Duration.minutes(10)),
          spares: Option.some(1),
          ready: "message"
        }),
        undefined
      )
      assert.deepStrictEqual(options.heartbeat, Duration.seconds(10))
      assert.strictEqual(options.maxMemory, 536_870_912)
      assert.deepStrictEqual(options.maxLifetime, Duration.hours(6))
      assert.deepStrictEqual(options.lifetimeJitter, Duration.minutes(10))
      assert.strictEqual(options.spares, 1)
      assert.strictEqual(options.mode, "module")
    })
  )

  it.effect(
    "--heartbeat or --spares run `node app.js` with an IPC channel (module mode): a Node worker then beats by itself",
    () =>
      Effect.gen(function* () {
        for (const given of [{ heartbeat: Option.some(Duration.seconds(10)) }, { spares: Option.some(1) }]) {
          const options = yield* Command.toOptions(input(given), undefined)
          assert.strictEqual(options.mode, "module")
          assert.strictEqual(options.command, "app.js")
          assert.strictEqual(options.ready, "spawn")
        }
        // Any other program keeps its command mode, and beats through PREFORK_HEARTBEAT_FD.
        const other = yield* Command.toOptions(
          input({ heartbeat: Option.some(Duration.seconds(10)), command: ["python3", "app.py"] }),
          undefined
        )
        assert.strictEqual(other.mode ?? "command", "command")
      })
  )

  it.effect("without them, the supervisor's defaults stand", () =>
    Effect.gen(function* () {
      const options = yield* Command.toOptions(input({}), undefined)
      for (const key of ["heartbeat", "maxMemory", "maxLifetime", "lifetimeJitter", "spares"] as const) {
        assert.isFalse(key in options, key)
      }
    })
  )

  it("every option that takes a value is in docs/cli.md's table", () => {
    const doc = readFileSync(new URL("../../docs/cli.md", import.meta.url), "utf8")
    for (const flag of Command.VALUE_FLAGS) {
      if (flag.length === 1) continue
      assert.match(doc, new RegExp(`^\\| (?:\`-\\w\`, )?\`--${flag}[\` ]`, "m"), `--${flag} is not documented`)
    }
  })
})
