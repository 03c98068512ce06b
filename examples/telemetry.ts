/**
 * `node examples/telemetry.ts`: two supervised workers, with the supervisor's
 * spans and metrics exported through OpenTelemetry to the console.
 *
 * `@effect/opentelemetry`'s `NodeSdk.layer` turns Effect's spans and metrics
 * into OpenTelemetry ones; here the SDK's `ConsoleSpanExporter` prints each
 * span as it ends and `ConsoleMetricExporter` prints the metrics every two
 * seconds and once more at shutdown. Swap them for OTLP exporters
 * (`@opentelemetry/exporter-trace-otlp-http`, …) to send them to a collector.
 *
 * What happens: two workers start (a `prefork.worker` span each); worker 1
 * is killed with SIGKILL and restarted (its span ends with the signal, and
 * `prefork.worker.restarts{reason="exit"}` counts it); a rolling reload
 * replaces both (`prefork.reload`, new `prefork.worker` spans); the
 * supervisor scales to three (`prefork.scale`), then stops.
 */
import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import { NodeRuntime } from "@effect/platform-node"
import { ConsoleMetricExporter, PeriodicExportingMetricReader } from "@opentelemetry/sdk-metrics"
import { ConsoleSpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base"
import { Effect, Layer, Option } from "effect"
import * as NodeProcessSpawner from "../src/node/NodeProcessSpawner.ts"
import * as Metrics from "../src/Metrics.ts"
import * as Supervisor from "../src/Supervisor.ts"

// A worker that serves until SIGTERM: any program would do.
const worker = `
process.on("SIGTERM", () => process.exit(0))
setInterval(() => {}, 1 << 30)
`

const Telemetry = NodeSdk.layer(() => ({
  resource: { serviceName: "prefork-telemetry-example" },
  spanProcessor: new SimpleSpanProcessor(new ConsoleSpanExporter()),
  metricReader: new PeriodicExportingMetricReader({
    exporter: new ConsoleMetricExporter(),
    exportIntervalMillis: 2_000
  })
}))

const program = Effect.scoped(
  Effect.gen(function* () {
    // The restart counters at 0 and the empty histograms, so the first export already lists them.
    yield* Metrics.register
    const handle = yield* Supervisor.start({
      processes: 2,
      command: process.execPath,
      args: ["-e", worker],
      ready: { delay: "200 millis" },
      stopTimeout: "2 seconds"
    })
    yield* handle.awaitReady
    yield* Effect.log("2 workers ready; killing worker 1")

    const slot = (yield* handle.status).find((s) => s.taskId === 1)
    if (slot !== undefined && Option.isSome(slot.pid)) process.kill(slot.pid.value, "SIGKILL")
    yield* Effect.sleep("500 millis")
    yield* handle.awaitReady

    yield* Effect.log("reloading")
    yield* handle.reload()
    yield* Effect.log("scaling to 3")
    yield* handle.scale(3)
    yield* handle.awaitReady
    yield* Effect.sleep("2500 millis")
    yield* Effect.log("stopping")
  })
).pipe(Effect.provide(Layer.merge(NodeProcessSpawner.layer, Telemetry)))

NodeRuntime.runMain(program)
