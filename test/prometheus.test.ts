/**
 * The Prometheus text encoder (src/internal/prometheus.ts) and the
 * supervisor's metrics (src/Metrics.ts): names and units as OpenTelemetry
 * maps them, escaping, every metric kind, histograms cumulative, and
 * `promtool check metrics` (Debian's `prometheus` package, installed by
 * .ci/run) accepting the output with no lint problem.
 */
import { spawnSync } from "node:child_process"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Metric } from "effect"
import * as Prometheus from "../src/internal/prometheus.ts"
import * as Metrics from "../src/Metrics.ts"

/** Runs `program` against a registry of its own, so tests never see each other's metrics. */
const isolated = <A>(program: Effect.Effect<A>): Effect.Effect<A> =>
  Effect.provideService(program, Metric.MetricRegistry, new Map())

const scrape = (...updates: ReadonlyArray<Effect.Effect<void>>): Effect.Effect<string> =>
  isolated(Effect.andThen(Effect.all(updates, { discard: true }), Prometheus.format))

/** The sample lines (no comments) as [name, labels, value]. */
const samples = (text: string): Array<readonly [string, string, string]> =>
  text
    .split("\n")
    .filter((line) => line.length > 0 && !line.startsWith("#"))
    .map((line) => {
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$/.exec(line)
      assert.isNotNull(m, `not a sample line: ${line}`)
      return [m![1]!, m![2] ?? "", m![3]!] as const
    })

const promtool = (() => {
  const r = spawnSync("promtool", ["--version"], { stdio: "ignore" })
  return r.status === 0
})()

/** `promtool check metrics` on `text`: its exit code and what it said. */
const check = (text: string) => {
  const r = spawnSync("promtool", ["check", "metrics"], { input: text, encoding: "utf8", timeout: 20_000 })
  return { status: r.status, output: `${r.stdout}${r.stderr}` }
}

describe("names and units (OpenTelemetry to Prometheus)", () => {
  it("dots become underscores, the unit becomes a word suffix, monotonic counters end with _total", () => {
    const cases: ReadonlyArray<readonly [string, string | undefined, "counter" | "gauge" | "histogram", string]> = [
      ["prefork.workers", "{worker}", "gauge", "prefork_workers"],
      ["prefork.worker.restarts", "{restart}", "counter", "prefork_worker_restarts_total"],
      ["prefork.worker.spawn.duration", "s", "histogram", "prefork_worker_spawn_duration_seconds"],
      ["prefork.worker.memory.usage", "By", "gauge", "prefork_worker_memory_usage_bytes"],
      ["http.server.request.duration", "ms", "histogram", "http_server_request_duration_milliseconds"],
      ["net.io", "By/s", "counter", "net_io_bytes_per_second_total"],
      ["cpu.utilization", "1", "gauge", "cpu_utilization_ratio"],
      ["requests", "1", "counter", "requests_total"],
      ["requests_total", undefined, "counter", "requests_total"],
      ["queue.size.bytes", "By", "gauge", "queue_size_bytes"],
      ["weird--name..x", undefined, "gauge", "weird_name_x"],
      ["9lives", undefined, "gauge", "_9lives"],
      ["timer", "milliseconds", "histogram", "timer_milliseconds"]
    ]
    for (const [id, unit, kind, expected] of cases) {
      assert.strictEqual(Prometheus.prometheusName(id, unit, kind, kind === "counter"), expected, `${id} ${unit}`)
    }
  })

  it("label names are made valid; reserved and leading-digit names get a prefix", () => {
    assert.strictEqual(Prometheus.labelName("task_id"), "task_id")
    assert.strictEqual(Prometheus.labelName("http.method"), "http_method")
    assert.strictEqual(Prometheus.labelName("9x"), "key_9x")
    assert.strictEqual(Prometheus.labelName("__name__"), "key__name__")
  })
})

describe("escaping", () => {
  it.effect("label values escape backslash, double quote and line feed; HELP escapes backslash and line feed", () =>
    Effect.gen(function* () {
      const text = yield* scrape(
        Metric.update(
          Metric.gauge("esc", { description: 'a "quoted" \\ help\nsecond line', attributes: { v: 'a"b\\c\nd' } }),
          1
        )
      )
      assert.strictEqual(
        text,
        ['# HELP esc a "quoted" \\\\ help\\nsecond line', "# TYPE esc gauge", 'esc{v="a\\"b\\\\c\\nd"} 1', ""].join(
          "\n"
        )
      )
    })
  )

  it.effect(
    "attributes are labels in name order, the unit is not; attributes that map to one name are joined with ;",
    () =>
      Effect.gen(function* () {
        const text = yield* scrape(
          Metric.update(Metric.gauge("g", { attributes: { z: "1", "a.b": "x", "a-b": "y", unit: "By" } }), 2)
        )
        assert.include(text, 'g_bytes{a_b="y;x",z="1"} 2\n')
      })
  )
})

describe("every metric kind", () => {
  it.effect(
    "an incremental counter is a counter with _total; one that may go down is a gauge; bigint counts exactly",
    () =>
      Effect.gen(function* () {
        const text = yield* scrape(
          Metric.update(Metric.counter("jobs.done", { description: "Jobs done", incremental: true }), 3),
          Metric.update(Metric.counter("queue.depth", { description: "Depth" }), -2),
          Metric.update(Metric.counter("bytes.in", { incremental: true, bigint: true }), 2n ** 60n)
        )
        assert.include(text, "# TYPE jobs_done_total counter\njobs_done_total 3\n")
        assert.include(text, "# TYPE queue_depth gauge\nqueue_depth -2\n")
        assert.include(text, `bytes_in_total ${2n ** 60n}\n`)
      })
  )

  it.effect("gauges: NaN and infinities as Prometheus spells them", () =>
    Effect.gen(function* () {
      const text = yield* scrape(
        Metric.update(Metric.gauge("a"), Infinity),
        Metric.update(Metric.gauge("b"), -Infinity),
        Metric.update(Metric.gauge("c"), NaN)
      )
      assert.deepStrictEqual(samples(text), [
        ["a", "", "+Inf"],
        ["b", "", "-Inf"],
        ["c", "", "NaN"]
      ])
    })
  )

  it.effect(
    "histograms: cumulative buckets in order, one le per boundary, +Inf equal to _count, then _sum and _count",
    () =>
      Effect.gen(function* () {
        // A boundary given twice and an explicit +Inf are each written once.
        const h = Metric.histogram("latency", {
          description: "Latency",
          boundaries: [0.5, 0.1, 1, 1, Infinity],
          attributes: { unit: "s", route: "/" }
        })
        const text = yield* scrape(...[0.05, 0.2, 0.3, 0.7, 5, 50].map((v) => Metric.update(h, v)))
        const lines = samples(text)
        assert.deepStrictEqual(lines, [
          ["latency_seconds_bucket", '{le="0.1",route="/"}', "1"],
          ["latency_seconds_bucket", '{le="0.5",route="/"}', "3"],
          ["latency_seconds_bucket", '{le="1",route="/"}', "4"],
          ["latency_seconds_bucket", '{le="+Inf",route="/"}', "6"],
          ["latency_seconds_sum", '{route="/"}', "56.25"],
          ["latency_seconds_count", '{route="/"}', "6"]
        ])
        const counts = lines.filter(([n]) => n.endsWith("_bucket")).map(([, , v]) => Number(v))
        for (let i = 1; i < counts.length; i++) assert.isAtLeast(counts[i]!, counts[i - 1]!)
      })
  )

  it.effect("histograms: an attribute named le does not clash with the bucket label", () =>
    Effect.gen(function* () {
      const text = yield* scrape(
        Metric.update(Metric.histogram("h", { boundaries: [1], attributes: { le: "mine" } }), 0.5)
      )
      assert.include(text, 'h_bucket{exported_le="mine",le="1"} 1\n')
      assert.include(text, 'h_bucket{exported_le="mine",le="+Inf"} 1\n')
    })
  )

  it.effect("summaries: one line per quantile (NaN while empty), _sum and _count", () =>
    Effect.gen(function* () {
      const used = Metric.summary("rt", { maxAge: "1 minute", maxSize: 100, quantiles: [0.5, 0.9], description: "RT" })
      const empty = Metric.summary("idle", { maxAge: "1 minute", maxSize: 100, quantiles: [0.5], description: "Idle" })
      const text = yield* scrape(...[1, 2, 3, 4].map((v) => Metric.update(used, v)), Effect.asVoid(Metric.value(empty)))
      assert.include(text, '# TYPE rt summary\nrt{quantile="0.5"} 2\nrt{quantile="0.9"} 4\nrt_sum 10\nrt_count 4\n')
      assert.include(text, '# TYPE idle summary\nidle{quantile="0.5"} NaN\nidle_sum 0\nidle_count 0\n')
    })
  )

  it.effect("frequencies: a counter with _total, one series per key", () =>
    Effect.gen(function* () {
      const f = Metric.frequency("http.status", { description: "Statuses", attributes: { key: "taken" } })
      const text = yield* scrape(...["200", "200", "503"].map((s) => Metric.update(f, s)))
      assert.include(
        text,
        '# TYPE http_status_total counter\nhttp_status_total{exported_key="taken",key="200"} 2\nhttp_status_total{exported_key="taken",key="503"} 1\n'
      )
    })
  )

  it.effect(
    "a name another kind took first, or a series repeated, is left out instead of breaking the exposition",
    () =>
      Effect.gen(function* () {
        const text = yield* scrape(
          Metric.update(Metric.gauge("clash"), 1),
          Metric.update(Metric.histogram("clash", { boundaries: [1] }), 1),
          Metric.update(Metric.gauge("same.name", { description: "one" }), 1),
          Metric.update(Metric.gauge("same_name", { description: "two" }), 2)
        )
        assert.deepStrictEqual(samples(text), [
          ["clash", "", "1"],
          ["same_name", "", "1"]
        ])
        assert.strictEqual(text.match(/# TYPE clash /g)?.length, 1)
      })
  )

  it.effect("no metrics: an empty exposition", () =>
    Effect.gen(function* () {
      assert.strictEqual(yield* scrape(), "")
    })
  )
})

describe("the supervisor's metrics (src/Metrics.ts)", () => {
  it.effect("each function updates its series, beside a program's own metrics in the same registry", () =>
    Effect.gen(function* () {
      const text = yield* scrape(
        Metrics.register,
        Metrics.setWorkers({ starting: 1, running: 2, restarting: 0, stopping: 0, exited: 0, stopped: 0, spare: 1 }),
        Metrics.recordRestart("exit"),
        Metrics.recordRestart("exit"),
        Metrics.recordRestart("memory"),
        Metrics.recordSpawn(0.002),
        Metrics.recordReady(0.3),
        Metrics.setBudgetRemaining(98),
        Metrics.setWorkerMemory(0, 52_428_800),
        Metrics.setWorkerMemory(1, 1024),
        Metrics.clearWorkerMemory(1),
        Metric.update(Metric.counter("app.requests", { description: "Requests", incremental: true }), 7)
      )
      const lines = samples(text)
      const value = (name: string, labels = "") => lines.find(([n, l]) => n === name && l === labels)?.[2]
      assert.strictEqual(value("prefork_workers", '{state="running"}'), "2")
      assert.strictEqual(value("prefork_workers", '{state="spare"}'), "1")
      assert.strictEqual(value("prefork_workers", '{state="stopping"}'), "0")
      assert.strictEqual(value("prefork_worker_restarts_total", '{reason="exit"}'), "2")
      assert.strictEqual(value("prefork_worker_restarts_total", '{reason="memory"}'), "1")
      // Registered at 0 before any restart, so the first one is an increase.
      assert.strictEqual(value("prefork_worker_restarts_total", '{reason="not_ready"}'), "0")
      assert.strictEqual(value("prefork_worker_spawn_duration_seconds_bucket", '{le="0.0025"}'), "1")
      assert.strictEqual(value("prefork_worker_spawn_duration_seconds_bucket", '{le="0.001"}'), "0")
      assert.strictEqual(value("prefork_worker_ready_duration_seconds_count"), "1")
      assert.strictEqual(value("prefork_restart_budget_remaining"), "98")
      assert.strictEqual(value("prefork_worker_memory_usage_bytes", '{task_id="0"}'), "52428800")
      assert.isUndefined(value("prefork_worker_memory_usage_bytes", '{task_id="1"}'))
      assert.strictEqual(value("app_requests_total"), "7")
    })
  )

  it.effect("the metrics carry OpenTelemetry names and their unit as the unit attribute", () =>
    Effect.gen(function* () {
      const snapshot = yield* isolated(
        Effect.andThen(
          Effect.all([Metrics.register, Metrics.setBudgetRemaining(1), Metrics.setWorkerMemory(3, 1)], {
            discard: true
          }),
          Metric.snapshot
        )
      )
      const units = Object.fromEntries(snapshot.map((s) => [s.id, s.attributes?.["unit"]]))
      assert.deepStrictEqual(units, {
        "prefork.worker.restarts": "{restart}",
        "prefork.worker.spawn.retries": "{retry}",
        "prefork.worker.spawn.duration": "s",
        "prefork.worker.ready.duration": "s",
        "prefork.restart.budget.remaining": "{restart}",
        "prefork.worker.memory.usage": "By"
      })
    })
  )
})

describe("promtool check metrics", () => {
  // .ci/run installs promtool; a machine without it skips these, CI never does.
  const available = promtool || process.env["CI"] !== undefined

  it.effect.skipIf(!available)(
    "accepts every kind of metric, the supervisor's and a program's own, with no lint problem",
    () =>
      Effect.gen(function* () {
        const text = yield* scrape(
          Metrics.register,
          Metrics.setWorkers({ starting: 0, running: 2, restarting: 0, stopping: 0, exited: 0, stopped: 0, spare: 0 }),
          Metrics.recordRestart("exit"),
          Metrics.recordSpawn(0.003),
          Metrics.recordReady(0.04),
          Metrics.recordReady(120),
          Metrics.setBudgetRemaining(Infinity),
          Metrics.setWorkerMemory(0, 1e8),
          Metric.update(Metric.counter("app.jobs", { description: "Jobs", incremental: true }), 1),
          Metric.update(
            Metric.gauge("app.load", {
              description: 'Load "now"\nper core',
              attributes: { unit: "1", host: 'a"b\\c\nd' }
            }),
            0.5
          ),
          Metric.update(
            Metric.summary("app.latency", {
              description: "Latency",
              maxAge: "1 minute",
              maxSize: 10,
              quantiles: [0.5, 0.99],
              attributes: { unit: "s" }
            }),
            0.1
          ),
          Metric.update(Metric.frequency("app.outcome", { description: "Outcomes" }), "ok")
        )
        const { status, output } = check(text)
        assert.strictEqual(output, "", text)
        assert.strictEqual(status, 0, text)
      })
  )

  it.skipIf(!available)("is a real check: it rejects a family declared twice and a counter without _total", () => {
    assert.strictEqual(check("# TYPE a gauge\na 1\n# TYPE a gauge\na 2\n").status, 1)
    const lint = check("# HELP b B\n# TYPE b counter\nb 1\n")
    assert.notStrictEqual(lint.status, 0)
    assert.include(lint.output, "_total")
  })
})
