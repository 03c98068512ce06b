/**
 * A slot's worker, once spawned, until it ends: it waits to be ready (or
 * not in time), then races its exit, its health watches (`health.ts`: the
 * heartbeat deadline, memory, lifetime) and its slot's mailbox
 * (`mailbox.ts`). Only this fiber takes the slot's intents and answers
 * them: it stops the worker for a `replace`, runs a surge (`surge.ts`) for
 * the others, and tells the loop how the worker ended; the loop classifies
 * that exit and decides what comes next.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import type * as Tracer from "effect/Tracer"
import { type ExitReason, NotReady, type Recycled } from "../Errors.ts"
import type * as ExitStatus from "../ExitStatus.ts"
import * as Metrics from "../Metrics.ts"
import type { Config, Event } from "../Model.ts"
import type { ProcessHandle } from "../ProcessSpawner.ts"
import type { TaskId } from "../TaskId.ts"
import * as Health from "./health.ts"
import * as Mailbox from "./mailbox.ts"
import type * as Slot from "./slot.ts"
import type * as Surge from "./surge.ts"

/** How one worker's life ended, as the loop classifies it. @internal */
export interface Ended {
  readonly pid: number
  readonly status: ExitStatus.ExitStatus
  /** When it was spawned, in monotonic milliseconds (for its uptime). */
  readonly startedAt: number
  readonly notReady: Option.Option<NotReady>
  /** Stopped by `restart`: started again at once, spending no budget. */
  readonly requested: boolean
  /** Replaced by a surge reload: this worker, already ready, is the slot's next one. */
  readonly next?: Surge.Acquired | undefined
  /** Why the supervisor ended it, when it did so itself (not ready, unresponsive, recycled). */
  readonly reason?: ExitReason | undefined
  /** For a requested replacement: who asked. */
  readonly by?: Mailbox.Intent["by"] | undefined
  /** The span of the reload or restart that asked: the next worker's span links to it. */
  readonly span?: Tracer.AnySpan | undefined
}

/** What ends the wait of a running worker. */
type Running = { readonly _tag: "exited" } | { readonly _tag: "mail" } | Health.Health

/** Why a worker ended, as the intents about it are told. @internal */
export const endCause = (ended: Ended): Mailbox.Cause =>
  ended.by ??
  (Option.isSome(ended.notReady)
    ? "not-ready"
    : ended.reason?._tag === "Unresponsive"
      ? "unresponsive"
      : ended.reason?._tag === "Recycled"
        ? "recycle"
        : "exit")

/**
 * The life of the workers of one supervisor's slots: `mailbox` is a live
 * slot's, `ready` waits for a worker's readiness, `recycle` queues the
 * recycle of a worker (one at a time, as an intent of its own).
 *
 * @internal
 */
export const make = (options: {
  readonly cfg: Config
  readonly mailbox: (taskId: TaskId) => Mailbox.Mailbox
  readonly ready: (handle: ProcessHandle) => Effect.Effect<void>
  readonly apply: (taskId: TaskId, t: Slot.Transition) => Effect.Effect<void>
  readonly publish: (event: Event) => Effect.Effect<unknown>
  readonly now: () => number
  /** Monotonic milliseconds, for durations. */
  readonly monotonic: () => number
  readonly surges: Surge.Surges
  readonly recycle: (taskId: TaskId, reason: Recycled, pid: number) => Effect.Effect<unknown>
}) => {
  const { apply, cfg, monotonic, now, publish, surges } = options
  const readyOf = options.ready
  /**
   * The worker's life once spawned: until ready (or not in time), then until
   * it exits, its health watch says so, or its mailbox asks it to be replaced
   * (stopped then started again, or a surge). `ready` is set for a worker
   * that took over from a surge. Only this fiber takes from the slot's
   * mailbox and answers (see `mailbox.ts`).
   */
  return (taskId: TaskId, handle: ProcessHandle, ready: boolean, incarnation: number): Effect.Effect<Ended> =>
    Effect.gen(function* () {
      const { pid } = handle
      const mailbox = options.mailbox(taskId)
      const startedAt = monotonic()
      const ended = (status: ExitStatus.ExitStatus, more: Partial<Ended> = {}): Ended => ({
        pid,
        status,
        startedAt,
        notReady: Option.none(),
        requested: false,
        ...more
      })
      /** An intent about an older worker: that one is gone already, replaced for `replacedBy`. */
      const stale = (intent: Mailbox.Intent) => intent.incarnation < incarnation
      const superseded: Mailbox.Answer = { _tag: "Superseded", by: mailbox.replacedBy }
      /** Acts on an intent to replace this worker by stopping it: it and every other intent about it wait for the next. */
      const stopFor = (intent: Mailbox.Intent) =>
        Effect.suspend(() => {
          Mailbox.wait(mailbox, intent, { _tag: "Done" })
          for (const other of Mailbox.takeAbout(mailbox, incarnation)) {
            Mailbox.wait(mailbox, other, { _tag: "Superseded", by: intent.by })
          }
          return Effect.map(handle.stop, (status) =>
            ended(status, { requested: true, reason: intent.reason, by: intent.by, span: intent.span })
          )
        })
      if (ready) yield* Mailbox.running(mailbox)
      if (!ready && cfg.ready !== "spawn") {
        const outcome = yield* Effect.gen(function* () {
          while (true) {
            const first = yield* Effect.raceAll([
              Effect.as(readyOf(handle), "ready" as const),
              Effect.as(handle.exit, "exited" as const),
              Effect.as(Mailbox.arrived(mailbox), "mail" as const)
            ])
            if (first !== "mail") return first
            const intent = Mailbox.next(mailbox)
            if (intent === undefined) continue
            // About an older worker: answered once this one is ready. Before it is ready, any other ask
            // replaces it: there is nothing to keep serving.
            if (stale(intent)) Mailbox.wait(mailbox, intent, superseded)
            else return intent
          }
        }).pipe(Effect.timeoutOption(cfg.readyTimeout))
        if (Option.isNone(outcome)) {
          const notReady = new NotReady({ taskId, pid, timeoutMillis: Duration.toMillis(cfg.readyTimeout) })
          return ended(yield* handle.stop, { notReady: Option.some(notReady) })
        }
        if (typeof outcome.value === "object") return yield* stopFor(outcome.value)
      }
      if (!ready && Option.isNone(yield* handle.exitStatus)) {
        // Published first, so whoever `awaitReady` wakes finds the event already in the stream.
        yield* publish({ _tag: "Ready", taskId, pid, at: now() })
        yield* apply(taskId, { _tag: "Ready" })
        yield* Mailbox.running(mailbox)
        yield* Metrics.recordReady((monotonic() - startedAt) / 1000)
        yield* Effect.annotateCurrentSpan("prefork.ready", true)
      }
      // Both watches keep their deadlines across the races below: started once, at readiness.
      const heartbeat = yield* Health.heartbeat(cfg, handle)
      let recycle = yield* Health.recycle(cfg, handle, undefined)
      const exited: Effect.Effect<Running> = Effect.as(handle.exit, { _tag: "exited" } as const)
      const arrived: Effect.Effect<Running> = Effect.as(Mailbox.arrived(mailbox), { _tag: "mail" } as const)
      while (true) {
        // A watch that is not configured is left out, not raced as `never`: each raced effect is a fiber.
        const watched: Array<Effect.Effect<Running>> = [exited, arrived]
        if (heartbeat !== undefined) watched.push(heartbeat)
        if (recycle !== undefined) watched.push(recycle)
        const outcome = yield* Effect.raceAll(watched)
        if (outcome._tag === "exited") return ended(yield* handle.exit)
        if (outcome._tag === "Unresponsive") {
          const { reason, status } = yield* Health.kill(cfg, taskId, handle, publish, now)
          return ended(status, { reason })
        }
        if (outcome._tag === "Recycle") {
          // Asked like an operator's reload, one worker at a time; until then this worker serves on.
          recycle = undefined
          const { reason } = outcome
          yield* publish({ _tag: "Recycling", taskId, pid, reason, at: now() })
          yield* Effect.logInfo(`${reason.message}, replacing it`).pipe(Effect.annotateLogs({ taskId, pid }))
          yield* options.recycle(taskId, reason, pid)
          continue
        }
        const intent = Mailbox.next(mailbox)
        if (intent === undefined) continue
        // About an older worker: this one, newer, runs already.
        if (stale(intent)) {
          yield* Mailbox.answer(intent, Exit.succeed(superseded))
          continue
        }
        if (intent.how === "replace") return yield* stopFor(intent)
        // A recycle may take a spare; a reload may not (the spares run the code it replaces).
        Mailbox.wait(mailbox, intent, { _tag: "Done" })
        const surged = yield* surges.surge(taskId, handle, intent.by === "recycle")
        if (surged._tag === "Failed") yield* Mailbox.fail(mailbox, intent, surged.error)
        const status = surged._tag === "TookOver" ? Option.some(surged.status) : surged.status
        if (Option.isSome(status)) {
          return ended(status.value, {
            requested: true,
            reason: intent.reason,
            by: intent.by,
            span: intent.span,
            next: surged._tag === "TookOver" ? surged.next : undefined
          })
        }
        // The surge failed: this worker keeps serving; the next intent is taken, a recycle tried again after a pause.
        if (intent.by === "recycle") recycle = yield* Health.recycle(cfg, handle, cfg.readyTimeout)
      }
    })
}
