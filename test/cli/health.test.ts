/**
 * `prefork --health` and `--shutdown-delay`, run as a user (or a kubelet)
 * runs them: the real bin, real workers, probes over 127.0.0.1. On SIGTERM
 * `/readyz` says 503 at once while every worker keeps running, untouched (no
 * SIGTERM reaches them), until the delay ends or a second signal cuts it
 * short; a third kills as a second does without a delay.
 */
import { existsSync, readdirSync } from "node:fs"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { busyPort } from "../helpers/http.ts"
import { assertDelayLogged, probe, probeUntil as until, running } from "../helpers/health.ts"
import { eventually } from "../helpers/procs.ts"
import { tempDir } from "../helpers/supervise.ts"
import { fixture, type Prefork, prefork, stderrHas } from "./prefork.ts"

const HEALTH_LINE = /Health on http:\/\/127\.0\.0\.1:(\d+) \(\/livez, \/readyz, \/startupz\)/

/** The port prefork says it serves health on. */
const healthPort = (p: Prefork) => Effect.map(stderrHas(p, HEALTH_LINE), () => Number(HEALTH_LINE.exec(p.stderr())![1]))

describe("prefork --health", () => {
  it.live(
    "livez (not while prefork is stopped), then startupz and readyz once every worker is ready; 404 elsewhere",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const p = yield* prefork([
            "-n",
            "2",
            "--control",
            "off",
            "--ready",
            "500ms",
            "--health",
            "127.0.0.1:0",
            "--",
            "node",
            fixture("forever.js")
          ])
          const port = yield* healthPort(p)
          assert.deepStrictEqual(yield* probe(port, "/livez"), { status: 200, body: "live\n" })
          assert.deepStrictEqual(yield* until(port, "/startupz", 200), { status: 200, body: "started\n" })
          assert.deepStrictEqual(yield* until(port, "/readyz", 200), {
            status: 200,
            body: "ready: 2 of 2 workers ready\n"
          })
          assert.strictEqual((yield* probe(port, "/")).status, 404)
          // prefork itself answers /livez: stopped (SIGSTOP), it answers nothing, and the probe times out.
          const stopped = yield* Effect.sync(() => process.kill(p.pid, "SIGSTOP")).pipe(
            Effect.andThen(probe(port, "/livez", "GET", 1_000)),
            Effect.ensuring(Effect.sync(() => process.kill(p.pid, "SIGCONT")))
          )
          assert.deepStrictEqual(stopped, { status: 0, body: "", error: "timeout" })
          assert.deepStrictEqual(yield* probe(port, "/livez"), { status: 200, body: "live\n" })
          p.signal("SIGTERM")
          assert.strictEqual((yield* p.exit).code, 0)
          assert.notInclude(p.stderr(), "Shutdown delay")
        })
      )
  )

  it.live("a bad address is a usage error naming --health (exit 2); a busy port cannot be listened on (exit 4)", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const bad = yield* prefork(["--health", "localhost:99999", "--", "node", fixture("forever.js")])
        assert.strictEqual((yield* bad.exit).code, 2)
        assert.include(bad.stderr(), "--health")
        assert.include(bad.stderr(), "host:port or :port")
        const port = yield* busyPort
        const busy = yield* prefork([
          "--control",
          "off",
          "--health",
          `127.0.0.1:${port}`,
          "--",
          "node",
          fixture("forever.js")
        ])
        assert.strictEqual((yield* busy.exit).code, 4)
        assert.include(busy.stderr(), `--health: cannot listen on 127.0.0.1:${port}: EADDRINUSE`)
        assert.notInclude(busy.stderr(), "Starting")
      })
    )
  )
})

describe("prefork --shutdown-delay", () => {
  const start = (dir: string, delay: string) =>
    prefork([
      "-n",
      "2",
      "--control",
      "off",
      "--stop-timeout",
      "1h",
      "--shutdown-delay",
      delay,
      "--health",
      "127.0.0.1:0",
      "--",
      "node",
      fixture("ignore-term.js"),
      dir
    ])
  const ready = (dir: string) =>
    eventually(() => (existsSync(`${dir}/ready-0`) && existsSync(`${dir}/ready-1`) ? true : undefined), "10 seconds")
  const terms = (dir: string) => readdirSync(dir).filter((f) => f.startsWith("term-"))

  it.live(
    "SIGTERM: readyz 503 at once, workers untouched during the delay; a second cuts it short, a third kills",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const p = yield* start(dir, "1h")
          const port = yield* healthPort(p)
          yield* ready(dir)
          assert.strictEqual((yield* until(port, "/readyz", 200)).status, 200)
          p.signal("SIGTERM")
          assert.deepStrictEqual(yield* until(port, "/readyz", 503), { status: 503, body: "draining: stopping soon\n" })
          yield* stderrHas(p, "Shutdown delay: workers serve 1h more before they are stopped (/readyz: 503)")
          yield* stderrHas(p, "SIGTERM received: stopping after the shutdown delay (SIGTERM again to stop now)")
          // Still live, every worker running, none sent SIGTERM.
          assert.strictEqual((yield* probe(port, "/livez")).status, 200)
          assert.strictEqual(running(p.tag, p.pid, "ignore-term.js").length, 2)
          assert.deepStrictEqual(terms(dir), [])
          assert.notInclude(p.stderr(), "Stopping 2 processes")

          p.signal("SIGTERM")
          yield* stderrHas(p, "Shutdown delay cut short: stopping the workers")
          // Logged by the signal's listener, beside the delay's own line: in either order.
          yield* stderrHas(p, "SIGTERM received again: cutting the shutdown delay short")
          // The workers get their SIGTERM now (and ignore it: --stop-timeout 1h).
          yield* eventually(() => (terms(dir).length === 2 ? true : undefined), "10 seconds")
          assert.strictEqual((yield* probe(port, "/readyz")).status, 503)

          p.signal("SIGTERM")
          yield* stderrHas(p, "SIGTERM received again: killing every worker now (SIGKILL)")
          assert.strictEqual((yield* p.exit).code, 0)
        })
      )
  )

  it.live("the delay ends by itself, then the workers are stopped: its log lines come in that order", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const p = yield* prefork([
          "-n",
          "2",
          "--control",
          "off",
          "--shutdown-delay",
          "300ms",
          "--",
          "node",
          fixture("forever.js")
        ])
        yield* stderrHas(p, "Starting 2 processes")
        p.signal("SIGINT")
        assert.strictEqual((yield* p.exit).code, 0)
        assertDelayLogged(p.stderr(), "SIGINT", "300ms", 2)
      })
    )
  )
})
