/**
 * `prefork --metrics` against clients that do not play fair: a slowloris is
 * cut at its absolute deadline, hundreds of idle connections do not keep a
 * scrape out, and under a low `ulimit -n` slow clients cannot take the
 * descriptors a worker's restart needs. Real prefork, real workers, clients
 * on 127.0.0.1.
 */
import { spawn } from "node:child_process"
import { mkdtempSync, readdirSync, rmSync } from "node:fs"
import { request } from "node:http"
import * as Net from "node:net"
import { tmpdir } from "node:os"
import * as Path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Fiber } from "effect"
import * as MetricsServer from "../../src/cli/MetricsServer.ts"
import { assertNoneLeft, eventually, makeTag } from "../helpers/procs.ts"
import { tempDir } from "../helpers/supervise.ts"
import { BIN, awaitEvents, events, fixture, prefork, stderrHas } from "./prefork.ts"

const METRICS_LINE = /Metrics on http:\/\/127\.0\.0\.1:(\d+)\/metrics/

/** One GET /metrics on a fresh connection, bounded in time: the status, or the connection error's code. */
const scrape = (port: number) =>
  Effect.callback<number | string>((resume) => {
    const req = request({ host: "127.0.0.1", port, path: "/metrics", agent: false, timeout: 15_000 }, (res) => {
      res.resume()
      res.on("end", () => resume(Effect.succeed(res.statusCode ?? 0)))
    })
    req.on("timeout", () => req.destroy(Object.assign(new Error("timeout"), { code: "ETIMEDOUT" })))
    req.on("error", (error: NodeJS.ErrnoException) => resume(Effect.succeed(error.code ?? error.message)))
    req.end()
  })

/** Client sockets opened by a test, destroyed when its scope closes. */
const clients = Effect.acquireRelease(
  Effect.sync(() => new Set<Net.Socket>()),
  (set) =>
    Effect.sync(() => {
      for (const socket of set) socket.destroy()
    })
)

interface Slow {
  /** Bytes sent before the server closed the connection (or all of them). */
  readonly sent: number
  /** Whether the server closed it before the client had sent everything. */
  readonly cut: boolean
  /** What the server said, if anything. */
  readonly got: string
}

/**
 * A slowloris: connects, then sends a request head one byte every
 * `everyMs`, `bytes` of them before the blank line. Completes when the server
 * closes the connection or when it has sent everything.
 */
const slowloris = (set: Set<Net.Socket>, port: number, everyMs: number, bytes: number) =>
  Effect.callback<Slow>((resume) => {
    const head = `GET /metrics HTTP/1.1\r\nX-Slow: ${"a".repeat(bytes)}`
    let sent = 0
    let got = ""
    let timer: NodeJS.Timeout | undefined
    const socket = Net.connect({ host: "127.0.0.1", port }, () => {
      socket.write(head.slice(0, 20))
      sent = 20
      timer = setInterval(() => {
        if (sent >= head.length) {
          clearInterval(timer)
          return resume(Effect.succeed({ sent, cut: false, got }))
        }
        socket.write(head[sent++]!)
      }, everyMs)
    })
    set.add(socket)
    socket.setEncoding("latin1")
    socket.on("data", (chunk: string) => (got += chunk))
    socket.on("error", () => {})
    socket.on("close", () => {
      clearInterval(timer)
      set.delete(socket)
      resume(Effect.succeed({ sent, cut: sent < head.length, got }))
    })
  })

/** Opens `n` connections that send nothing; resolves once all are connected (or closed). */
const idle = (set: Set<Net.Socket>, port: number, n: number) =>
  Effect.callback<void>((resume) => {
    let left = n
    const done = () => {
      if (--left === 0) resume(Effect.void)
    }
    for (let i = 0; i < n; i++) {
      const socket = Net.connect({ host: "127.0.0.1", port })
      set.add(socket)
      socket.once("connect", done)
      socket.on("error", () => {})
      socket.once("close", () => {
        set.delete(socket)
        if (socket.connecting) done()
      })
    }
  })

/**
 * Keeps `n` connections that send nothing open: one the server closes is
 * opened again 50 ms later, until the scope closes (bounded: 20,000 in all).
 */
const idleFlood = (set: Set<Net.Socket>, port: number, n: number) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const state = { stopped: false, opened: 0 }
      const open = () => {
        if (state.stopped || state.opened >= 20_000) return
        state.opened++
        const socket = Net.connect({ host: "127.0.0.1", port })
        set.add(socket)
        socket.on("error", () => {})
        socket.once("close", () => {
          set.delete(socket)
          setTimeout(open, 50)
        })
      }
      for (let i = 0; i < n; i++) open()
      return state
    }),
    (state) => Effect.sync(() => void (state.stopped = true))
  )

/** How many descriptors a process holds. */
const fds = (pid: number): number => readdirSync(`/proc/${pid}/fd`).length

/** Samples `f` every 10 ms while `effect` runs; returns the effect's result and the largest sample. */
const sampling = <A, E, R>(f: () => number, effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    let max = f()
    const timer = setInterval(() => {
      try {
        max = Math.max(max, f())
      } catch {
        // the process is gone: its last samples stand
      }
    }, 10)
    const result = yield* Effect.ensuring(
      effect,
      Effect.sync(() => clearInterval(timer))
    )
    return [result, max] as const
  })

/**
 * Starts prefork through `sh -c 'ulimit -n <limit>; exec node bin/prefork.js …'`,
 * its output collected; killed at the end of the scope if still running, and
 * no process of its tag may be left.
 */
const preforkUnderLimit = (limit: number, args: ReadonlyArray<string>) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const { env: tagEnv, tag } = makeTag()
      const runtimeDir = mkdtempSync(Path.join(tmpdir(), "prefork-run-"))
      const quoted = [process.execPath, BIN, ...args].map((a) => `'${a.replaceAll("'", "'\\''")}'`).join(" ")
      const child = spawn("sh", ["-c", `ulimit -n ${limit} && exec ${quoted}`], {
        env: {
          ...process.env,
          PATH: `${Path.dirname(process.execPath)}${Path.delimiter}${process.env["PATH"] ?? ""}`,
          XDG_RUNTIME_DIR: runtimeDir,
          ...tagEnv
        },
        stdio: ["ignore", "pipe", "pipe"]
      })
      let stderr = ""
      child.stdout!.resume()
      child.stderr!.setEncoding("utf8")
      child.stderr!.on("data", (chunk: string) => (stderr += chunk))
      const closed = Deferred.makeUnsafe<number | null>()
      child.on("close", (code) => Deferred.doneUnsafe(closed, Effect.succeed(code)))
      return {
        child,
        tag,
        runtimeDir,
        stderr: () => stderr,
        exit: Deferred.await(closed).pipe(
          Effect.timeoutOrElse({
            duration: "30 seconds",
            orElse: () => Effect.die(new Error(`prefork did not exit; stderr:\n${stderr}`))
          })
        )
      }
    }),
    (p) =>
      Effect.gen(function* () {
        if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL")
        yield* assertNoneLeft(p.tag, "5 seconds")
        rmSync(p.runtimeDir, { recursive: true, force: true })
      })
  )

describe("prefork --metrics against abusive clients (real processes)", () => {
  it.live(
    "a slowloris (a byte a second) is cut at the head's deadline, before its head is complete; a scrape answers meanwhile",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const set = yield* clients
          const dir = yield* tempDir
          const p = yield* prefork(
            ["-n", "1", "--metrics", "127.0.0.1:0", "--", "node", fixture("cli-worker.js"), dir],
            { env: { [MetricsServer.ENV.headTimeout]: "2000", [MetricsServer.ENV.connectionTimeout]: "3000" } }
          )
          yield* stderrHas(p, METRICS_LINE)
          const port = Number(METRICS_LINE.exec(p.stderr())![1])
          // 30 bytes at one a second: it would finish its head long after the 2 s deadline.
          const slow = yield* Effect.forkChild(slowloris(set, port, 1000, 30))
          assert.strictEqual(yield* scrape(port), 200)
          const cut = yield* Fiber.join(slow)
          assert.isTrue(cut.cut, `the slowloris sent its whole head (${cut.sent} bytes) and was not cut`)
          assert.isTrue(
            cut.got === "" || cut.got.startsWith("HTTP/1.1 408 Request Timeout\r\n"),
            `answered: ${cut.got.slice(0, 40)}`
          )
          p.signal("SIGTERM")
          assert.strictEqual((yield* p.exit).code, 0, p.stderr())
        })
      )
  )

  it.live(
    "100 slowloris and then 300 idle connections: prefork holds at most its cap of them, and a scrape still answers 200",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const set = yield* clients
          const dir = yield* tempDir
          const p = yield* prefork(["-n", "1", "--metrics", "127.0.0.1:0", "--", "node", fixture("cli-worker.js"), dir])
          yield* stderrHas(p, METRICS_LINE)
          const port = Number(METRICS_LINE.exec(p.stderr())![1])
          yield* awaitEvents(dir, 1, ([e]) => e === "ready")
          assert.strictEqual(yield* scrape(port), 200)
          const baseline = fds(p.pid)
          const [status, most] = yield* sampling(
            () => fds(p.pid),
            Effect.gen(function* () {
              for (let i = 0; i < 100; i++) yield* Effect.forkChild(slowloris(set, port, 1000, 600))
              // In waves of 25 (less than the listen backlog, so none waits for a SYN retransmission).
              for (let wave = 0; wave < 12; wave++) yield* idle(set, port, 25)
              // Every one of them accepted (each past the cap closed an older one) before the scrape comes.
              yield* eventually(() => (set.size <= MetricsServer.MAX_CONNECTIONS + 8 ? true : undefined), "8 seconds")
              return yield* scrape(port)
            })
          )
          assert.strictEqual(status, 200)
          // The cap (64 here: the open-file limit is far above 1,024), and a few descriptors of the moment.
          assert.isAtMost(most - baseline, MetricsServer.MAX_CONNECTIONS + 4, `${baseline} fds, then up to ${most}`)
          p.signal("SIGTERM")
          assert.strictEqual((yield* p.exit).code, 0, p.stderr())
        })
      )
  )

  it.live(
    "under ulimit -n 128, with slow and idle clients reconnecting all along, a killed worker is restarted and scrapes answer",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const set = yield* clients
          const dir = yield* tempDir
          const p = yield* preforkUnderLimit(128, [
            "-n",
            "2",
            "--control",
            "off",
            "--metrics",
            "127.0.0.1:0",
            "--",
            "node",
            fixture("cli-worker.js"),
            dir
          ])
          yield* eventually(() => (METRICS_LINE.test(p.stderr()) ? true : undefined), "10 seconds")
          const port = Number(METRICS_LINE.exec(p.stderr())![1])
          yield* awaitEvents(dir, 2, ([e]) => e === "ready")
          // 128 / 16: at most 8 metrics connections, whatever comes.
          yield* idleFlood(set, port, 200)
          for (let i = 0; i < 100; i++) yield* Effect.forkChild(slowloris(set, port, 1000, 600))
          yield* Effect.sleep("1 second")
          assert.strictEqual(yield* scrape(port), 200)

          const victim = events(dir).find(([e, task]) => e === "start" && task === 1)![2]
          process.kill(victim, "SIGKILL")
          yield* awaitEvents(dir, 1, ([e, task, pid]) => e === "ready" && task === 1 && pid !== victim, "20 seconds")
          assert.include(p.stderr(), `child 1 (pid ${victim}) killed by signal 9, restarting`)
          assert.notMatch(p.stderr(), /EMFILE|SpawnFailed|cannot/)
          assert.strictEqual(yield* scrape(port), 200)
          p.child.kill("SIGTERM")
          assert.strictEqual(yield* p.exit, 0, p.stderr())
        })
      ),
    60_000
  )
})

describe("the metrics server's limits", () => {
  it("the connection cap is a sixteenth of the open-file limit, at most 64 and at least 1", () => {
    assert.strictEqual(MetricsServer.connectionCap(20_000), 64)
    assert.strictEqual(MetricsServer.connectionCap(1024), 64)
    assert.strictEqual(MetricsServer.connectionCap(128), 8)
    assert.strictEqual(MetricsServer.connectionCap(8), 1)
    assert.strictEqual(MetricsServer.connectionCap(undefined), 64)
    assert.strictEqual(MetricsServer.connectionCap(20_000, 500), 500)
    assert.strictEqual(MetricsServer.connectionCap(128, 500), 8)
    assert.isAbove(MetricsServer.openFileLimit() ?? 1, 0)
  })

  it.effect("defaults, overrides, and bad values refused naming the variable", () =>
    Effect.gen(function* () {
      assert.deepStrictEqual(yield* MetricsServer.limitsFromEnv({}, 1024), {
        headTimeout: 10_000,
        connectionTimeout: 20_000,
        maxConnections: 64
      })
      assert.deepStrictEqual(
        yield* MetricsServer.limitsFromEnv(
          {
            PREFORK_METRICS_HEAD_TIMEOUT_MS: "30000",
            PREFORK_METRICS_MAX_CONNECTIONS: "10"
          },
          1024
        ),
        { headTimeout: 30_000, connectionTimeout: 30_000, maxConnections: 10 }
      )
      for (const [env, message] of [
        [
          { PREFORK_METRICS_HEAD_TIMEOUT_MS: "0" },
          'PREFORK_METRICS_HEAD_TIMEOUT_MS: expected a whole number above 0, got "0"'
        ],
        [
          { PREFORK_METRICS_MAX_CONNECTIONS: "1e3" },
          'PREFORK_METRICS_MAX_CONNECTIONS: expected a whole number above 0, got "1e3"'
        ],
        [
          { PREFORK_METRICS_HEAD_TIMEOUT_MS: "5000", PREFORK_METRICS_TIMEOUT_MS: "1000" },
          "PREFORK_METRICS_TIMEOUT_MS (1000) is shorter than PREFORK_METRICS_HEAD_TIMEOUT_MS (5000)"
        ]
      ] as const) {
        const error = yield* Effect.flip(MetricsServer.limitsFromEnv(env, 1024))
        assert.strictEqual(error._tag, "InvalidOptions")
        assert.strictEqual(error.message, message)
      }
    })
  )

  it.live("a bad value in the environment: exit 2, said, nothing started", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const dir = yield* tempDir
        const p = yield* prefork(["--metrics", "127.0.0.1:0", "--", "node", fixture("cli-worker.js"), dir], {
          env: { PREFORK_METRICS_TIMEOUT_MS: "soon" }
        })
        assert.strictEqual((yield* p.exit).code, 2, p.stderr())
        assert.include(p.stderr(), 'PREFORK_METRICS_TIMEOUT_MS: expected a whole number above 0, got "soon"')
        assert.notInclude(p.stderr(), "Starting")
      })
    )
  )
})
