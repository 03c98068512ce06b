/**
 * When a worker that ended is started again, and how long the supervisor
 * keeps doing that. Pure policy: no processes, no I/O; time comes from
 * `Clock`, so every rule here can be checked under `TestClock`.
 *
 * - **Which exits restart**: `restart: "on-failure"` (the default, Tornado's
 *   rule and OTP's `transient`) restarts abnormal exits; `"always"` (OTP
 *   `permanent`) restarts every exit; `"never"` (OTP `temporary`) none. An exit
 *   is normal when its code is in `normalExitCodes` (default `[0]`).
 * - **The budget** is one `Schedule`, shared by all slots, stepped once per
 *   restart with the {@link ExitRecord} of the exit. When it is done the
 *   supervisor gives up with `TooManyRestarts`. `maxRestarts: n` is
 *   `Schedule.recurs(n)`: exactly n restarts are allowed (Tornado's
 *   `num_restarts > max_restarts`), default 100. `intensity` is OTP's
 *   sliding window: at most `maxRestarts` restarts within any `within`. A delay
 *   the schedule returns is waited before the restart.
 * - **Backoff** is per slot: after `k` consecutive failures of a slot, wait
 *   `min(initial × factor^(k−1), max)`. A slot that stayed up for `resetAfter`
 *   starts counting from zero again.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Cause from "effect/Cause"
import * as Pull from "effect/Pull"
import { type ExitRecord, InvalidOptions } from "./Errors.ts"
import type { ExitStatus } from "./ExitStatus.ts"

/**
 * @since 0.1.0
 * @category models
 */
export type Restart = "on-failure" | "always" | "never"

/**
 * The budget: a schedule stepped once per restart, with the exit that caused it.
 *
 * @since 0.1.0
 * @category models
 */
export type Budget = Schedule.Schedule<unknown, ExitRecord>

/**
 * The restart options a supervisor accepts.
 *
 * @since 0.1.0
 * @category models
 */
export interface RestartOptions {
  /** Which exits are restarted. Default `"on-failure"`. */
  readonly restart?: Restart | undefined
  /** Exit codes that count as a normal exit. Default `[0]`. */
  readonly normalExitCodes?: ReadonlyArray<number> | undefined
  /** How many restarts in all (shared by every slot) before giving up. Default 100; `Infinity` for no limit. */
  readonly maxRestarts?: number | undefined
  /**
   * OTP-style intensity: at most `maxRestarts` restarts within any window of
   * `within`, counted over all workers together (`per: "supervisor"`, the
   * default, as OTP) or for each worker alone (`per: "worker"`: a crash loop
   * of one worker gives up, every worker crashing once at the same moment
   * does not; systemd's `StartLimitBurst` counts the same way, per unit).
   */
  readonly intensity?:
    | {
        readonly maxRestarts: number
        readonly within: Duration.Input
        readonly per?: "supervisor" | "worker" | undefined
      }
    | undefined
  /** A budget of your own; replaces `maxRestarts` and `intensity`. */
  readonly budget?: Budget | undefined
  /** Per-slot exponential backoff between restarts. Default: none (restart at once, as Tornado). */
  readonly backoff?:
    | {
        readonly initial: Duration.Input
        readonly max?: Duration.Input | undefined
        readonly factor?: number | undefined
      }
    | undefined
  /** A slot that ran this long before exiting starts its backoff from zero. Default 10 seconds. */
  readonly resetAfter?: Duration.Input | undefined
}

/**
 * A validated restart policy.
 *
 * @since 0.1.0
 * @category models
 */
export interface RestartPolicy {
  readonly restart: Restart
  readonly normalExitCodes: ReadonlySet<number>
  readonly budget: Budget
  readonly backoff: Option.Option<{
    readonly initial: Duration.Duration
    readonly max: Duration.Duration
    readonly factor: number
  }>
  readonly resetAfter: Duration.Duration
  /**
   * The budget's limits when it was built from `maxRestarts` and `intensity`
   * (none for a custom `budget`): what the `prefork.restart.budget.remaining`
   * gauge is computed from.
   */
  readonly limits?: {
    readonly maxRestarts?: number | undefined
    /** A shared intensity (one counted per worker has no single "remaining"). */
    readonly intensity?: { readonly maxRestarts: number; readonly within: Duration.Duration } | undefined
  }
}

/**
 * Tornado's default budget: 100 restarts.
 *
 * @since 0.1.0
 * @category constants
 */
export const DEFAULT_MAX_RESTARTS = 100

/**
 * Exactly `n` restarts are allowed; the exit after the n-th restart gives up.
 *
 * @since 0.1.0
 * @category budgets
 */
export const maxRestarts = (n: number): Budget => (n === Infinity ? Schedule.forever : Schedule.recurs(n))

/**
 * OTP's restart intensity: at most `n` restarts within any sliding window of
 * `within`. A burst of `n + 1` abnormal exits inside the window gives up; exits
 * spaced wider than `within / n` never do. With `per: "worker"` each worker
 * (task id) has a window of its own: only one worker's own `n + 1` restarts
 * within `within` give up.
 *
 * @since 0.1.0
 * @category budgets
 */
export const intensity = (n: number, within: Duration.Input, per: "supervisor" | "worker" = "supervisor"): Budget => {
  const window = Duration.toMillis(Duration.fromInputUnsafe(within))
  return Schedule.fromStepWithMetadata(
    Effect.sync(() => {
      const windows = new Map<number, Array<number>>()
      return (meta: Schedule.InputMetadata<ExitRecord>) => {
        const key = per === "worker" ? meta.input.taskId : -1
        const recent = windows.get(key) ?? []
        while (recent.length > 0 && meta.now - recent[0]! >= window) recent.shift()
        if (recent.length >= n) return Cause.done(recent.length)
        recent.push(meta.now)
        windows.set(key, recent)
        // Windows that emptied are forgotten: the map holds only workers that restarted within the window.
        if (per === "worker" && windows.size > 64) {
          for (const [task, times] of windows)
            if (times.length === 0 || meta.now - times.at(-1)! >= window) windows.delete(task)
        }
        return Effect.succeed([recent.length, Duration.zero] as [number, Duration.Duration])
      }
    })
  )
}

/**
 * Is this exit normal under the policy (not a failure)?
 *
 * @since 0.1.0
 * @category predicates
 */
export const isNormal = (policy: RestartPolicy, status: ExitStatus): boolean =>
  status._tag === "Exited" && policy.normalExitCodes.has(status.code)

/**
 * Is a worker that ended this way started again?
 *
 * @since 0.1.0
 * @category predicates
 */
export const shouldRestart = (policy: RestartPolicy, status: ExitStatus): boolean =>
  policy.restart === "always" || (policy.restart === "on-failure" && !isNormal(policy, status))

/**
 * The backoff before restarting a slot after its `failures`-th consecutive
 * failure (1 for the first): zero without a backoff.
 *
 * @since 0.1.0
 * @category utils
 */
export const backoffDelay = (policy: RestartPolicy, failures: number): Duration.Duration => {
  if (Option.isNone(policy.backoff) || failures <= 0) return Duration.zero
  const { factor, initial, max } = policy.backoff.value
  const ms = Duration.toMillis(initial) * Math.pow(factor, failures - 1)
  return Duration.min(Duration.millis(Number.isFinite(ms) ? ms : Duration.toMillis(max)), max)
}

const invalid = (field: string, message: string) => new InvalidOptions({ field, message })

const isCount = (n: unknown): n is number =>
  typeof n === "number" && (n === Infinity || (Number.isInteger(n) && n >= 0))

/**
 * Reads a duration option, failing with `InvalidOptions` naming the field.
 *
 * @since 0.1.0
 * @category constructors
 */
export const decodeDuration = (
  field: string,
  input: Duration.Input | undefined,
  fallback: Duration.Input
): Effect.Effect<Duration.Duration, InvalidOptions> => {
  const decoded = Duration.fromInput(input ?? fallback)
  if (Option.isNone(decoded)) {
    return Effect.fail(invalid(field, `${field} must be a duration such as 5000 or "5 seconds", got ${String(input)}`))
  }
  const ms = Duration.toMillis(decoded.value)
  if (!(ms >= 0) || !Number.isFinite(ms)) {
    return Effect.fail(invalid(field, `${field} must be a finite, non-negative duration, got ${String(input)}`))
  }
  return Effect.succeed(decoded.value)
}

/**
 * Validates restart options into a policy. Every bad value is an
 * `InvalidOptions` whose `field` names the option.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = Effect.fnUntraced(function* (
  options: RestartOptions = {}
): Effect.fn.Return<RestartPolicy, InvalidOptions> {
  const restart = options.restart ?? "on-failure"
  if (restart !== "on-failure" && restart !== "always" && restart !== "never") {
    return yield* invalid(
      "restart",
      `restart must be "on-failure", "always" or "never", got ${JSON.stringify(restart)}`
    )
  }
  const codes = options.normalExitCodes ?? [0]
  if (!Array.isArray(codes) || !codes.every((c) => Number.isInteger(c) && c >= 0 && c <= 255)) {
    return yield* invalid("normalExitCodes", `normalExitCodes must be a list of integers 0..255, got ${String(codes)}`)
  }
  let budget: Budget
  let limits: RestartPolicy["limits"]
  if (options.budget !== undefined) {
    if (!Schedule.isSchedule(options.budget)) {
      return yield* invalid("budget", "budget must be a Schedule")
    }
    budget = options.budget
  } else {
    const parts: Array<Budget> = []
    if (options.maxRestarts !== undefined || options.intensity === undefined) {
      const n = options.maxRestarts ?? DEFAULT_MAX_RESTARTS
      if (!isCount(n)) {
        return yield* invalid("maxRestarts", `maxRestarts must be a non-negative integer or Infinity, got ${String(n)}`)
      }
      parts.push(maxRestarts(n))
      limits = { maxRestarts: n }
    }
    if (options.intensity !== undefined) {
      const n = options.intensity.maxRestarts
      if (!isCount(n) || n === Infinity) {
        return yield* invalid(
          "intensity.maxRestarts",
          `intensity.maxRestarts must be a non-negative integer, got ${String(n)}`
        )
      }
      const within = yield* decodeDuration("intensity.within", options.intensity.within, 0)
      if (Duration.toMillis(within) <= 0) {
        return yield* invalid("intensity.within", `intensity.within must be a positive duration`)
      }
      const per = options.intensity.per ?? "supervisor"
      if (per !== "supervisor" && per !== "worker") {
        return yield* invalid(
          "intensity.per",
          `intensity.per must be "supervisor" or "worker", got ${JSON.stringify(per)}`
        )
      }
      parts.push(intensity(n, within, per))
      if (per === "supervisor") limits = { ...limits, intensity: { maxRestarts: n, within } }
    }
    budget = parts.length === 1 ? parts[0]! : Schedule.max([parts[0]!, parts[1]!])
  }
  let backoff: RestartPolicy["backoff"] = Option.none()
  if (options.backoff !== undefined) {
    const initial = yield* decodeDuration("backoff.initial", options.backoff.initial, 0)
    const max = yield* decodeDuration("backoff.max", options.backoff.max, "30 seconds")
    const factor = options.backoff.factor ?? 2
    if (typeof factor !== "number" || !Number.isFinite(factor) || factor < 1) {
      return yield* invalid("backoff.factor", `backoff.factor must be a finite number >= 1, got ${String(factor)}`)
    }
    backoff = Option.some({ initial, max, factor })
  }
  const resetAfter = yield* decodeDuration("resetAfter", options.resetAfter, "10 seconds")
  return {
    restart,
    normalExitCodes: new Set(codes),
    budget,
    backoff,
    resetAfter,
    ...(limits === undefined ? {} : { limits })
  }
})

/**
 * A running budget: `step(exit)` spends one restart and says how long to wait
 * before it, or `None` when the budget is spent. Steps are taken one at a time
 * in the order of the calls, with the time from `Clock`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const start = (
  policy: RestartPolicy
): Effect.Effect<(exit: ExitRecord) => Effect.Effect<Option.Option<Duration.Duration>>> =>
  Effect.map(
    Schedule.toStep(policy.budget),
    (step) => (exit: ExitRecord) =>
      Effect.clockWith((clock) => step(clock.currentTimeMillisUnsafe(), exit)).pipe(
        Effect.map(([, delay]) => Option.some(delay)),
        Pull.catchDone(() => Effect.succeed(Option.none<Duration.Duration>()))
      )
  )
