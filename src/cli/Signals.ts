/**
 * What `prefork` does on each signal, the way gunicorn's arbiter does:
 *
 * | signal            | action |
 * | ----------------- | ------ |
 * | SIGTERM, SIGINT   | stop every worker gracefully, once, then exit 0 (`NodeRuntime.runMain` interrupts the program; this module says so in the log first). A second one while stopping kills every worker at once (SIGKILL to its group), as Docker and PM2 do |
 * | SIGHUP            | rolling reload: for each worker in turn, a replacement starts beside it, and the old one stops once the new one is ready |
 * | SIGTTIN / SIGTTOU | one worker more / one fewer (never fewer than one); the highest task id goes first |
 * | SIGUSR2           | print the status table |
 *
 * The listeners are installed by {@link listen} for the life of its scope, and
 * should be installed before the supervisor starts: then they are removed only
 * after every worker has been stopped, and a SIGHUP that arrives during the
 * stop cannot kill prefork with the default action.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"
import type { SupervisorHandle } from "../Supervisor.ts"

/**
 * The signals `prefork` acts on while it runs (SIGINT and SIGTERM are
 * `NodeRuntime.runMain`'s).
 *
 * @since 0.1.0
 * @category constants
 */
export const CONTROL = ["SIGHUP", "SIGTTIN", "SIGTTOU", "SIGUSR2"] as const

/**
 * @since 0.1.0
 * @category models
 */
export type Control = (typeof CONTROL)[number]

const STOP = ["SIGINT", "SIGTERM"] as const

/**
 * Installs the signal listeners for the life of the scope, and returns the
 * queue of control signals received. SIGINT and SIGTERM are logged at once
 * (the first as "stopping", any later one as "already stopping").
 *
 * @since 0.1.0
 * @category constructors
 */
export const listen = (): Effect.Effect<Queue.Dequeue<Control>, never, Scope.Scope> =>
  Effect.gen(function* () {
    const queue = yield* Queue.unbounded<Control>()
    const context = yield* Effect.context<never>()
    const log = (effect: Effect.Effect<void>) => void Effect.runForkWith(context)(effect)
    let stopping = false
    const onStop = (signal: NodeJS.Signals) => {
      if (stopping) {
        log(Effect.logWarning(`${signal} received again: killing every worker now (SIGKILL)`))
        force?.()
        return
      }
      // Said before the supervisor logs how many workers it stops, and how (this listener runs first).
      log(Effect.logInfo(`${signal} received: stopping (${signal} again to kill every worker at once)`))
      stopping = true
    }
    const onControl = (signal: NodeJS.Signals) => {
      if (stopping) return log(Effect.logInfo(`${signal} received: stopping, ignored`))
      Queue.offerUnsafe(queue, signal as Control)
    }
    yield* Effect.acquireRelease(
      Effect.sync(() => {
        for (const signal of CONTROL) process.on(signal, onControl)
        for (const signal of STOP) process.prependListener(signal, onStop)
      }),
      () =>
        Effect.sync(() => {
          for (const signal of CONTROL) process.off(signal, onControl)
          for (const signal of STOP) process.off(signal, onStop)
          force = undefined
        })
    )
    return queue
  })

/**
 * What a second SIGINT or SIGTERM does: set by {@link control} once the
 * supervisor runs (SIGKILL to every live worker's process group).
 */
let force: (() => void) | undefined

/**
 * Acts on each control signal until interrupted. `report` shows the status
 * (SIGUSR2). Reloads and scaling run in the background, so a status request
 * is answered during a reload; a SIGHUP during a reload is ignored (and
 * logged), and scaling requests are applied in order, each from the count the
 * previous one asked for.
 *
 * @since 0.1.0
 * @category constructors
 */
export const control = (
  handle: SupervisorHandle,
  signals: Queue.Dequeue<Control>,
  report: Effect.Effect<void>
): Effect.Effect<never, never, Scope.Scope> =>
  Effect.gen(function* () {
    let target = handle.processes
    let reloading = false
    // Kept after this fiber ends (a stop interrupts it first): `listen`'s scope, which outlives the stop, clears it.
    force = () => {
      for (const slot of Effect.runSync(handle.status)) {
        for (const pid of [slot.pid, slot.replacement]) {
          if (pid._tag === "None") continue
          try {
            // A worker leads its process group: its own children go with it.
            process.kill(-pid.value, "SIGKILL")
          } catch {
            // already gone
          }
        }
      }
    }
    const scaleRequests = yield* Queue.unbounded<void>()
    // One fiber applies every scaling request in turn, each to the latest target.
    yield* Effect.forkScoped(
      Effect.forever(
        Queue.take(scaleRequests).pipe(
          Effect.andThen(Effect.suspend(() => handle.scale(target))),
          Effect.catchTag("InvalidOptions", (e) => Effect.logWarning(e.message))
        )
      )
    )
    const reload = Effect.gen(function* () {
      reloading = true
      yield* Effect.logInfo(
        `SIGHUP received: reloading ${handle.processes} process${handle.processes === 1 ? "" : "es"} one at a time`
      )
      yield* handle.reload().pipe(
        Effect.andThen(Effect.logInfo("Reload finished")),
        Effect.catch((error) => Effect.logWarning(`Reload stopped: ${error.message}`))
      )
    }).pipe(Effect.ensuring(Effect.sync(() => (reloading = false))))

    const act = (signal: Control): Effect.Effect<void, never, Scope.Scope> => {
      switch (signal) {
        case "SIGUSR2":
          return report
        case "SIGHUP":
          return reloading
            ? Effect.logInfo("SIGHUP received: a reload is already running, ignored")
            : Effect.asVoid(Effect.forkScoped(reload))
        case "SIGTTIN":
          target++
          return Effect.logInfo(`SIGTTIN received: scaling to ${target} process${target === 1 ? "" : "es"}`).pipe(
            Effect.andThen(Queue.offer(scaleRequests, undefined))
          )
        case "SIGTTOU":
          if (target <= 1) return Effect.logInfo("SIGTTOU received: already at 1 process, ignored")
          target--
          return Effect.logInfo(`SIGTTOU received: scaling to ${target} process${target === 1 ? "" : "es"}`).pipe(
            Effect.andThen(Queue.offer(scaleRequests, undefined))
          )
      }
    }
    return yield* Effect.forever(Effect.flatMap(Queue.take(signals), act))
  })
