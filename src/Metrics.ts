/**
 * The supervisor's metrics, as Effect `Metric`s: how many workers are in each
 * state, why they were restarted, how long they take to spawn and to become
 * ready, how much restart budget is left, and each worker's memory.
 *
 * Names follow OpenTelemetry's semantic conventions: dot-separated
 * namespaces, no unit in the name, the unit as the `unit` attribute (UCUM:
 * `s`, `By`, `{restart}`), which is where Effect's OTLP exporters
 * (`effect/observability`'s `OtlpMetrics`, `@effect/opentelemetry`) read it.
 * Durations are in seconds.
 *
 * The metrics live in Effect's `MetricRegistry` like any other, so whatever
 * exports a program's own metrics exports these too: OTLP, the Prometheus
 * text of `prefork --metrics`, or `Metric.snapshot`. The supervisor updates
 * them through the small functions below.
 *
 * | metric | kind | unit | attributes |
 * | --- | --- | --- | --- |
 * | `prefork.workers` | gauge | `{worker}` | `state` |
 * | `prefork.worker.restarts` | counter | `{restart}` | `reason` |
 * | `prefork.worker.spawn.duration` | histogram | `s` | |
 * | `prefork.worker.spawn.retries` | counter | `{retry}` | `code` |
 * | `prefork.worker.ready.duration` | histogram | `s` | |
 * | `prefork.restart.budget.remaining` | gauge | `{restart}` | |
 * | `prefork.worker.memory.usage` | gauge | `By` | `task_id` |
 *
 * Importing this module loads nothing beyond `effect/Effect` (which imports
 * `effect/Metric` itself) and the library's small `Errors` module.
 *
 * @example
 * ```ts
 * import { Effect, Metric } from "effect"
 * import { Metrics } from "effect-prefork"
 *
 * const restartsSoFar = Effect.map(Metric.value(Metrics.restarts), (state) => state.count)
 * ```
 *
 * @since 0.1.0
 */
import type * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import { SHORTAGE_CODES } from "./Errors.ts"

/**
 * Why a worker was replaced:
 *
 * - `exit`: it exited abnormally (a non-normal code or a signal) and was restarted;
 * - `not_ready`: it was not ready within the ready timeout;
 * - `unresponsive`: it sent no heartbeat within the heartbeat timeout;
 * - `memory`: it was recycled for using more than `maxMemory`;
 * - `lifetime`: it was recycled at the end of its `maxLifetime`;
 * - `restart`: an operator asked (`SupervisorHandle.restart`, `prefork ctl restart`);
 * - `reload`: a rolling reload replaced it.
 *
 * @since 0.1.0
 * @category models
 */
export type RestartReason = "exit" | "not_ready" | "unresponsive" | "memory" | "lifetime" | "restart" | "reload"

/**
 * Every {@link RestartReason}.
 *
 * @since 0.1.0
 * @category constants
 */
export const RESTART_REASONS: ReadonlyArray<RestartReason> = [
  "exit",
  "not_ready",
  "unresponsive",
  "memory",
  "lifetime",
  "restart",
  "reload"
]

/**
 * The states a worker is counted in by {@link workers}: the states of
 * `prefork ctl status`, plus `spare` for warm spares (which are not workers
 * of any slot yet).
 *
 * @since 0.1.0
 * @category models
 */
export type WorkerState = "starting" | "running" | "restarting" | "stopping" | "exited" | "stopped" | "spare"

/**
 * Every {@link WorkerState}.
 *
 * @since 0.1.0
 * @category constants
 */
export const WORKER_STATES: ReadonlyArray<WorkerState> = [
  "starting",
  "running",
  "restarting",
  "stopping",
  "exited",
  "stopped",
  "spare"
]

/**
 * The bucket boundaries of the duration histograms, in seconds: 1 ms to 60 s,
 * roughly ×2.5 apart. Slower observations fall in the `+Inf` bucket.
 *
 * @since 0.1.0
 * @category constants
 */
export const DURATION_BOUNDARIES: ReadonlyArray<number> = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60
]

/**
 * `prefork.worker.restarts`: workers replaced, by `reason`
 * ({@link RestartReason}). Monotonic (`incremental`), so Prometheus sees a
 * counter, `prefork_worker_restarts_total`. Only `exit`, `not_ready` and
 * `unresponsive` spend restart budget.
 *
 * @since 0.1.0
 * @category metrics
 */
export const restarts: Metric.Counter<number> = Metric.counter("prefork.worker.restarts", {
  description: "Workers replaced by the supervisor, by reason (only exit, not_ready and unresponsive spend budget)",
  incremental: true,
  attributes: { unit: "{restart}" }
})

/**
 * `prefork.workers`: how many workers are in each `state`
 * ({@link WorkerState}) right now; one series per state, zeros included.
 *
 * @since 0.1.0
 * @category metrics
 */
export const workers: Metric.Gauge<number> = Metric.gauge("prefork.workers", {
  description: "Workers in each state (spare: warm spares waiting for a task id)",
  attributes: { unit: "{worker}" }
})

/**
 * `prefork.worker.spawn.duration`: seconds from asking the system to start a
 * worker to having its pid.
 *
 * @since 0.1.0
 * @category metrics
 */
export const spawnDuration: Metric.Histogram<number> = Metric.histogram("prefork.worker.spawn.duration", {
  description: "Seconds from the spawn call to the worker's pid",
  boundaries: DURATION_BOUNDARIES,
  attributes: { unit: "s" }
})

/**
 * `prefork.worker.spawn.retries`: spawns that failed for want of a resource
 * and were tried again, by `code` (`EMFILE`, `ENFILE`, `EAGAIN`, `ENOMEM`:
 * see `Errors.SHORTAGE_CODES`). Monotonic, so Prometheus sees a counter,
 * `prefork_worker_spawn_retries_total`. A retry spends no restart budget:
 * a rising count with no new workers means the primary or the system is
 * short of files, processes or memory.
 *
 * @since 0.1.0
 * @category metrics
 */
export const spawnRetries: Metric.Counter<number> = Metric.counter("prefork.worker.spawn.retries", {
  description: "Spawns retried because the system lacked a resource (open files, processes, memory), by code",
  incremental: true,
  attributes: { unit: "{retry}" }
})

/**
 * `prefork.worker.ready.duration`: seconds from a worker's spawn to its
 * readiness (see `Options.ready`).
 *
 * @since 0.1.0
 * @category metrics
 */
export const readyDuration: Metric.Histogram<number> = Metric.histogram("prefork.worker.ready.duration", {
  description: "Seconds from a worker's spawn to its readiness",
  boundaries: DURATION_BOUNDARIES,
  attributes: { unit: "s" }
})

/**
 * `prefork.restart.budget.remaining`: how many more abnormal exits the
 * restart budget allows. The supervisor leaves it unset while the budget has
 * no limit or is a `Schedule` of its own (it counts `maxRestarts` and `intensity`).
 *
 * @since 0.1.0
 * @category metrics
 */
export const budgetRemaining: Metric.Gauge<number> = Metric.gauge("prefork.restart.budget.remaining", {
  description: "Restarts the restart budget still allows before the supervisor gives up",
  attributes: { unit: "{restart}" }
})

/**
 * `prefork.worker.memory.usage`: the resident memory of each worker's whole
 * process group, in bytes, by `task_id`, as sampled for `maxMemory`.
 *
 * @since 0.1.0
 * @category metrics
 */
export const workerMemory: Metric.Gauge<number> = Metric.gauge("prefork.worker.memory.usage", {
  description: "Resident memory of each worker's process group, in bytes",
  attributes: { unit: "By" }
})

// One series per attribute value, made once as a metric of its own (its attributes its own, not added from
// the context on every update as `Metric.withAttributes` does): an update then finds its series by a key
// computed once, not by serializing the attributes again. The same series as `Metric.withAttributes(m, …)`.
const restartsBy = Object.fromEntries(
  RESTART_REASONS.map((reason) => [
    reason,
    Metric.counter("prefork.worker.restarts", {
      description: restarts.description,
      incremental: true,
      attributes: { unit: "{restart}", reason }
    })
  ])
) as Readonly<Record<RestartReason, Metric.Counter<number>>>

const retriesBy = Object.fromEntries(
  SHORTAGE_CODES.map((code) => [
    code,
    Metric.counter("prefork.worker.spawn.retries", {
      description: spawnRetries.description,
      incremental: true,
      attributes: { unit: "{retry}", code }
    })
  ])
) as Readonly<Record<string, Metric.Counter<number>>>

const workersIn = Object.fromEntries(
  WORKER_STATES.map((state) => [
    state,
    Metric.gauge("prefork.workers", { description: workers.description, attributes: { unit: "{worker}", state } })
  ])
) as Readonly<Record<WorkerState, Metric.Gauge<number>>>

const memoryOf = (taskId: number): Metric.Gauge<number> =>
  Metric.withAttributes(workerMemory, { task_id: String(taskId) })

/**
 * Creates the series whose value is known before anything happens: a
 * restart counter at 0 for every reason, a spawn-retry counter at 0 for
 * every shortage code, and the empty duration histograms.
 * Prometheus's `increase()` and `rate()` then see the first restart as an
 * increase (a series that appears at 1 shows none). The supervisor's gauges
 * appear with their first value. Idempotent.
 *
 * @since 0.1.0
 * @category updates
 */
export const register: Effect.Effect<void> = Effect.contextWith((context: Context.Context<never>) =>
  Effect.sync(() => {
    for (const reason of RESTART_REASONS) restartsBy[reason].updateUnsafe(0, context)
    for (const code of SHORTAGE_CODES) retriesBy[code]!.updateUnsafe(0, context)
    spawnDuration.valueUnsafe(context)
    readyDuration.valueUnsafe(context)
  })
)

/**
 * Counts one replacement of a worker, for `reason`.
 *
 * @since 0.1.0
 * @category updates
 */
export const recordRestart = (reason: RestartReason): Effect.Effect<void> =>
  Metric.update(restartsBy[reason] ?? Metric.withAttributes(restarts, { reason: String(reason) }), 1)

/**
 * Sets how many workers are in each state; a state missing from `counts`
 * is set to 0.
 *
 * @since 0.1.0
 * @category updates
 */
export const setWorkers = (counts: Readonly<Record<WorkerState, number>>): Effect.Effect<void> =>
  // One effect for every state's series: the supervisor calls it on each change of status.
  Effect.contextWith((context: Context.Context<never>) =>
    Effect.sync(() => {
      for (const state of WORKER_STATES) workersIn[state].updateUnsafe(counts[state] ?? 0, context)
    })
  )

/**
 * Records how long one spawn took, in seconds (the spawn call to the pid).
 *
 * @since 0.1.0
 * @category updates
 */
export const recordSpawn = (seconds: number): Effect.Effect<void> => Metric.update(spawnDuration, seconds)

/**
 * Counts one spawn retried after a shortage with this error `code`.
 *
 * @since 0.1.0
 * @category updates
 */
export const recordSpawnRetry = (code: string): Effect.Effect<void> =>
  Metric.update(retriesBy[code] ?? Metric.withAttributes(spawnRetries, { code }), 1)

/**
 * Records how long one worker took from its spawn to readiness, in seconds.
 *
 * @since 0.1.0
 * @category updates
 */
export const recordReady = (seconds: number): Effect.Effect<void> => Metric.update(readyDuration, seconds)

/**
 * Sets how many more restarts the budget allows.
 *
 * @since 0.1.0
 * @category updates
 */
export const setBudgetRemaining = (n: number): Effect.Effect<void> => Metric.update(budgetRemaining, n)

/**
 * Sets the memory of worker `taskId`'s process group, in bytes.
 *
 * @since 0.1.0
 * @category updates
 */
export const setWorkerMemory = (taskId: number, bytes: number): Effect.Effect<void> =>
  Metric.update(memoryOf(taskId), bytes)

/**
 * Removes worker `taskId`'s memory series (for a slot scaled away, or when
 * the supervisor ends), so a stale value is not exported forever.
 *
 * @since 0.1.0
 * @category updates
 */
export const clearWorkerMemory = (taskId: number): Effect.Effect<void> => Metric.remove(memoryOf(taskId))
