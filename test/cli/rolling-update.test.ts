/**
 * A rolling update as Kubernetes runs one, simulated on 127.0.0.1: two
 * prefork instances (each `--listen` and `--health` on ports of its own)
 * behind a client-side balancer that polls each `/readyz` and sends
 * requests only to the instances that answered 200 at its last poll, under
 * a steady stream of requests. One instance gets SIGTERM with
 * `--shutdown-delay`: its `/readyz` says 503 while every one of its workers
 * still runs, the balancer stops sending it requests, and then it stops.
 * No request fails, and nothing is left running.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { getJson } from "../helpers/http.ts"
import { assertDelayLogged, probe, running } from "../helpers/health.ts"
import { eventually } from "../helpers/procs.ts"
import { fixture, type Prefork, prefork, stderrHas } from "./prefork.ts"

/** A port prefork names in its log: "<label> 127.0.0.1:<port>" or "<label> http://127.0.0.1:<port>". */
const portIn = (p: Prefork, label: RegExp) => Effect.map(stderrHas(p, label), () => Number(label.exec(p.stderr())![1]))

interface Instance {
  readonly name: string
  readonly p: Prefork
  readonly port: number
  readonly health: number
  /** What its /readyz said at the balancer's last poll. */
  ready: boolean
}

describe("a rolling update behind a balancer that polls /readyz", () => {
  it.live(
    "SIGTERM with --shutdown-delay: /readyz says 503 before any worker stops, and no request fails",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const start = (name: string) =>
            Effect.gen(function* () {
              const p = yield* prefork([
                "-n",
                "2",
                "--control",
                "off",
                "--listen",
                "127.0.0.1:0",
                "--health",
                "127.0.0.1:0",
                "--shutdown-delay",
                "2s",
                "--stop-timeout",
                "10s",
                "--",
                "node",
                fixture("fd-server.js")
              ])
              const port = yield* portIn(p, /Listening on 127\.0\.0\.1:(\d+)/)
              const health = yield* portIn(p, /Health on http:\/\/127\.0\.0\.1:(\d+)/)
              return { name, p, port, health, ready: false } as Instance
            })
          const instances = [yield* start("a"), yield* start("b")]
          const [a, b] = instances as [Instance, Instance]

          // The balancer's view: each /readyz every 100 ms; the order of what happened, as the test saw it.
          const order: Array<string> = []
          let workersAtFirst503: number | undefined
          const poll = Effect.forEach(instances, (instance) =>
            Effect.map(probe(instance.health, "/readyz", "GET", 2_000), (answer) => {
              const ready = answer.status === 200
              if (instance === a && !ready && a.ready && workersAtFirst503 === undefined) {
                workersAtFirst503 = running(a.p.tag, a.p.pid, "fd-server.js").length
                order.push(`a /readyz 503 (${answer.body.trim()})`)
              }
              instance.ready = ready
            })
          )
          yield* poll
          yield* eventually(() => (a.ready && b.ready ? true : undefined), "20 seconds").pipe(
            Effect.race(Effect.forever(Effect.andThen(Effect.sleep(50), poll)))
          )
          const balancer = yield* Effect.forkChild(Effect.forever(Effect.andThen(Effect.sleep(100), poll)))

          // Four clients, one request at a time each, to the ready instances in turn, until the test says stop.
          const results: Array<{ readonly instance: string; readonly ok: boolean; readonly error?: string }> = []
          const load = { running: true, next: 0 }
          const client = Effect.gen(function* () {
            for (let i = 0; i < 20_000 && load.running; i++) {
              const ready = instances.filter((x) => x.ready)
              if (ready.length === 0) {
                yield* Effect.sleep(10)
                continue
              }
              const target = ready[load.next++ % ready.length]!
              const answer = yield* getJson({ port: target.port })
              results.push(
                "error" in answer
                  ? { instance: target.name, ok: false, error: answer.error }
                  : { instance: target.name, ok: true }
              )
            }
          })
          const clients = yield* Effect.forkChild(Effect.all([client, client, client, client], { concurrency: 4 }))
          yield* eventually(
            () => (results.filter((r) => r.instance === "a").length >= 20 ? true : undefined),
            "20 seconds"
          )

          order.push("a SIGTERM")
          a.p.signal("SIGTERM")
          const exited = yield* a.p.exit
          order.push("a exited")
          const afterA = results.length
          yield* eventually(() => (results.length >= afterA + 20 ? true : undefined), "20 seconds")
          load.running = false
          yield* Fiber.join(clients)
          yield* Fiber.interrupt(balancer)

          const failed = results.filter((r) => !r.ok)
          assert.deepStrictEqual(failed, [], `${failed.length} of ${results.length} requests failed`)
          assert.strictEqual(exited.code, 0)
          // The first 503 came after the SIGTERM and before a's exit, while both of its workers still ran.
          assert.deepStrictEqual(order, ["a SIGTERM", "a /readyz 503 (draining: stopping soon)", "a exited"])
          assert.strictEqual(workersAtFirst503, 2)
          // a's own log says the same order: the delay, then the workers' stop.
          assertDelayLogged(a.p.stderr(), "SIGTERM", "2s", 2)
          // b served throughout, and alone at the end.
          assert.isAbove(results.filter((r) => r.instance === "b").length, 20)
          assert.strictEqual(results.slice(-8).filter((r) => r.instance === "a").length, 0)

          b.p.signal("SIGTERM")
          assert.strictEqual((yield* b.p.exit).code, 0)
        })
      ),
    90_000
  )
})
