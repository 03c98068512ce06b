/**
 * The health watch of a running worker, as the loop races it against the
 * worker's exit and the requests to replace it: its heartbeat deadline, its
 * memory samples and its lifetime. Each watch is an effect that completes
 * with what it saw, or never; the loop decides what to do.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Random from "effect/Random"
import { Recycled, Unresponsive } from "../Errors.ts"
import type * as ExitStatus from "../ExitStatus.ts"
import * as Metrics from "../Metrics.ts"
import type { Config, Event } from "../Model.ts"
import { monotonicMillis, type ProcessHandle } from "../ProcessSpawner.ts"
import type { TaskId } from "../TaskId.ts"

/** What the health watch of a running worker saw. @internal */
export type Health = { readonly _tag: "Unresponsive" } | { readonly _tag: "Recycle"; readonly reason: Recycled }

/**
 * How long an unresponsive worker has, after its diagnostic signal, before
 * SIGKILL: the time to fetch a Node worker's stack (~200 ms here), or for
 * another program to print its own. @internal
 */
export const DIAGNOSE_GRACE = Duration.seconds(2)

/** How many memory samples in a row must be above the limit before a worker is recycled. @internal */
export const MEMORY_SAMPLES_ABOVE = 2

/** The monotonic clock in milliseconds (`ProcessSpawner.monotonicMillis`): every deadline here reads it. */
const monotonicNow: Effect.Effect<number> = Effect.clockWith((clock) => Effect.sync(() => monotonicMillis(clock)))

/** Waits until the monotonic clock reads `at`. */
const until = (at: number): Effect.Effect<void> =>
  Effect.flatMap(monotonicNow, (t) => (t >= at ? Effect.void : Effect.sleep(Duration.millis(at - t))))

/**
 * How much later than its deadline the heartbeat watch may wake and still
 * count as the supervisor having run meanwhile. A timer of a running Node
 * event loop fires a few milliseconds late; one that fires later than this
 * means the supervisor itself was stopped (SIGSTOP, a suspended terminal
 * job) or blocked (a long synchronous task, a flood): that time is not held
 * against the workers. @internal
 */
export const STALL_MILLIS = 100

/**
 * The heartbeat watch of a worker that is ready now: it completes when the
 * worker misses its deadline, `timeout` after its last beat (or after now, if
 * it has not beaten since). Never without heartbeats. It wakes once per
 * deadline, not per beat: a beat costs the primary only the storing of its
 * time. The deadlines are absolute, on the monotonic clock, so the loop may
 * race the watch again and again (after a failed reload, say) without moving
 * them, and a wall clock stepped back or forward does not move them either.
 *
 * A verdict comes after the evidence: each look at the last beat reads the
 * beats already waiting first (`ProcessHandle.lastHeartbeat`), and the time
 * the supervisor did not run is not counted. When the watch wakes later than
 * its deadline by more than `STALL_MILLIS`, the supervisor was stalled for at
 * least that long: the worker's deadline moves by it, and by one heartbeat
 * interval more (once per silence) for the worker to be heard from. A beat
 * read later but stored before the stall keeps it counted. A worker that
 * really hangs is found within the timeout, plus the supervisor's own
 * stalls, plus one interval.
 *
 * @internal
 */
export const heartbeat = (cfg: Config, handle: ProcessHandle): Effect.Effect<Effect.Effect<Health> | undefined> =>
  Effect.map(monotonicNow, (since) => {
    const hb = cfg.heartbeat
    if (hb === undefined) return undefined
    const timeout = Duration.toMillis(hb.timeout)
    const interval = Duration.toMillis(hb.interval)
    const late: Health = { _tag: "Unresponsive" }
    // Kept across races: where the silence counts from, and the stalls of the supervisor since (when each was seen).
    let from = since
    let stalls: Array<{ readonly seenAt: number; readonly millis: number }> = []
    return Effect.gen(function* () {
      while (true) {
        const last = Option.getOrElse(yield* handle.lastHeartbeat, () => since)
        if (last > from) {
          from = last
          // A beat is stored while the supervisor runs: a stall seen after it began after it, and still counts.
          stalls = stalls.filter((stall) => stall.seenAt > from)
        }
        const stalled = stalls.reduce((sum, stall) => sum + stall.millis, stalls.length > 0 ? interval : 0)
        const deadline = from + timeout + stalled
        if ((yield* monotonicNow) >= deadline) return late
        yield* until(deadline)
        const woke = yield* monotonicNow
        if (woke - deadline > STALL_MILLIS) stalls.push({ seenAt: woke, millis: woke - deadline })
      }
    })
  })

/**
 * The recycle watch of a worker that is ready now: it completes when the
 * worker is to be recycled, its memory above the limit for
 * `MEMORY_SAMPLES_ABOVE` samples in a row, or its lifetime (with its jitter,
 * drawn now) reached. After a recycle that failed, `retryAfter`: the lifetime
 * is spent, so it is tried again then, and memory sampling starts again then.
 * Its deadlines and its count of samples above the limit live outside the
 * returned effect, so racing it again does not start them over.
 *
 * @internal
 */
export const recycle = (
  cfg: Config,
  handle: ProcessHandle,
  retryAfter: Duration.Duration | undefined
): Effect.Effect<Effect.Effect<Health> | undefined> =>
  Effect.gen(function* () {
    const start = yield* monotonicNow
    const watches: Array<Effect.Effect<Health>> = []
    const { pid, taskId } = handle
    if (cfg.maxLifetime !== undefined) {
      const jitter = Duration.toMillis(cfg.lifetimeJitter)
      const lifetimeMillis = Math.round(
        retryAfter !== undefined
          ? Duration.toMillis(retryAfter)
          : Duration.toMillis(cfg.maxLifetime) + (jitter > 0 ? yield* Random.nextBetween(0, jitter) : 0)
      )
      watches.push(
        Effect.as(until(start + lifetimeMillis), {
          _tag: "Recycle",
          reason: new Recycled({ taskId, pid, reason: "lifetime", lifetimeMillis })
        } as const)
      )
    }
    const limit = cfg.maxMemory
    if (limit !== undefined) {
      const interval = Duration.toMillis(cfg.memoryInterval)
      let next = start + (retryAfter === undefined ? 0 : Duration.toMillis(retryAfter)) + interval
      let above = 0
      watches.push(
        Effect.gen(function* () {
          while (true) {
            yield* until(next)
            next = (yield* monotonicNow) + interval
            const sample = yield* handle.memory
            if (Option.isNone(sample)) continue
            yield* Metrics.setWorkerMemory(taskId, sample.value)
            above = sample.value > limit ? above + 1 : 0
            if (above >= MEMORY_SAMPLES_ABOVE) {
              return {
                _tag: "Recycle",
                reason: new Recycled({ taskId, pid, reason: "memory", rssBytes: sample.value, limitBytes: limit })
              } as const
            }
          }
        })
      )
    }
    return watches.length === 0 ? undefined : watches.length === 1 ? watches[0] : Effect.raceAll(watches)
  })

/**
 * Ends a worker that missed its heartbeat deadline: its diagnostic signal
 * (told as an `Unresponsive` event and a warning), a moment to print, then
 * SIGKILL to its group, and the stop of what is left. Its exit status and the
 * typed reason. `now` is the wall clock, for the event's time; the grace is
 * measured on the monotonic clock.
 *
 * @internal
 */
export const kill = (
  cfg: Config,
  taskId: TaskId,
  handle: ProcessHandle,
  publish: (event: Event) => Effect.Effect<unknown>,
  now: () => number
): Effect.Effect<{ readonly status: ExitStatus.ExitStatus; readonly reason: Unresponsive }> =>
  Effect.gen(function* () {
    const { pid } = handle
    const timeoutMillis = Duration.toMillis(cfg.heartbeat!.timeout)
    const grace = Duration.toMillis(Duration.min(DIAGNOSE_GRACE, cfg.stopTimeout))
    const started = yield* monotonicNow
    // A Node worker's stack is fetched from its inspector within the grace; any other program has the grace to print.
    const { signal, stack } = yield* handle.diagnose(grace)
    yield* publish({ _tag: "Unresponsive", taskId, pid, signal, at: now(), ...(stack === undefined ? {} : { stack }) })
    yield* Effect.logWarning(
      `child ${taskId} (pid ${pid}) unresponsive: no heartbeat for ${timeoutMillis} ms; sent ${signal} for a diagnostic${
        stack === undefined ? "" : `; its event loop is stuck in:\n${stack}`
      }`
    ).pipe(Effect.annotateLogs({ taskId, pid }))
    const left = grace - ((yield* monotonicNow) - started)
    if (stack === undefined && left > 0)
      yield* Effect.raceFirst(Effect.asVoid(handle.exit), Effect.sleep(Duration.millis(left)))
    yield* handle.kill("SIGKILL")
    const status = yield* handle.stop
    return {
      status,
      reason: new Unresponsive({ taskId, pid, timeoutMillis, signal, ...(stack === undefined ? {} : { stack }) })
    }
  })
