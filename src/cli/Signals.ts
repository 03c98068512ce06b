/**
 * What `prefork` does on each signal, the way gunicorn's arbiter does:
 *
 * | signal            | action |
 * | ----------------- | ------ |
 * | SIGTERM, SIGINT   | stop every worker gracefully, once, then exit 0 (`NodeRuntime.runMain` interrupts the program; this module says so in the log first). With `--shutdown-delay`, `--health`'s `/readyz` answers 503 at once and the workers keep serving for the delay before they are stopped (`Health.delayStop`); a second one during the delay cuts it short. A second one while stopping (a third with a delay cut short) kills every process the supervisor still has at once (workers, replacements, spares: SIGKILL to each group), as Docker and PM2 do |
 * | SIGHUP            | rolling reload: for each worker in turn, a replacement starts beside it, and the old one stops once the new one is ready |
 * | SIGTTIN / SIGTTOU | one worker more / one fewer than there are then (never fewer than one); the highest task id goes first |
 * | SIGUSR2           | print the status table |
 *
 * The listeners are installed by {@link listen} for the life of its scope, and
 * should be installed before the supervisor starts: then they are removed only
 * after every worker has been stopped, and a SIGHUP that arrives during the
 * stop cannot kill prefork with the default action. Nothing of the
 * supervisor's state is kept here: each signal reads the handle when it acts.
 *
 * @since 0.1.0
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"
import type { SupervisorHandle } from "../Supervisor.ts"
import * as Orphan from "./Orphan.ts"
import * as Reload from "./Reload.ts"
import * as Status from "./Status.ts"

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
 * In a prefork that npm started (see `Orphan.startedByNpm`), the first stop
 * signal again this soon after it (monotonic milliseconds) is that one signal
 * delivered twice, not a second Ctrl-C, and is ignored: when npm runs prefork
 * with no shell between them (npm's script shell is bash, which `exec`s a
 * lone command: /bin/sh on macOS, Fedora, Arch), a terminal's Ctrl-C reaches
 * npm and prefork at once, and npm passes its copy on to prefork a moment
 * later, which would otherwise SIGKILL every worker. A person's second Ctrl-C
 * comes later.
 *
 * @since 0.1.0
 * @category constants
 */
export const DUPLICATE_MILLIS = 250

/**
 * What {@link listen} gives {@link control}: the control signals received, in
 * order, and the supervisor a second SIGINT or SIGTERM kills, once there is one.
 * `stopping` says whether a SIGINT or SIGTERM has been received (`/readyz`
 * answers 503 from then on); `cut` is completed by the second one while a
 * shutdown delay runs (or by the delay's end: `Health.delayStop`).
 *
 * @since 0.1.0
 * @category models
 */
export interface Listener {
  readonly signals: Queue.Dequeue<Control>
  readonly supervisor: Deferred.Deferred<SupervisorHandle>
  readonly stopping: Effect.Effect<boolean>
  readonly cut: Deferred.Deferred<void>
}

/**
 * Installs the signal listeners for the life of the scope. SIGINT and SIGTERM
 * are logged at once (the first as "stopping"; under npm, the first one again
 * within {@link DUPLICATE_MILLIS} is the same one delivered twice, and
 * ignored); with `shutdownDelay` set, the
 * second one completes `cut` unless the delay is over already; a later one,
 * once {@link control} has been given the supervisor, SIGKILLs every process
 * the supervisor still has, read from it at that moment
 * (`SupervisorHandle.kill`).
 *
 * @since 0.1.0
 * @category constructors
 */
export const listen = (
  options: { readonly shutdownDelay?: boolean | undefined } = {}
): Effect.Effect<Listener, never, Scope.Scope> =>
  Effect.gen(function* () {
    const signals = yield* Queue.unbounded<Control>()
    const supervisor = yield* Deferred.make<SupervisorHandle>()
    const cut = yield* Deferred.make<void>()
    const context = yield* Effect.context<never>()
    const log = (effect: Effect.Effect<void>) => void Effect.runForkWith(context)(effect)
    let stopping = false
    /** The first stop signal, and when it came (monotonic). */
    let first: { readonly signal: NodeJS.Signals; readonly at: number } | undefined
    const delayed = options.shutdownDelay === true
    const npm = Orphan.startedByNpm(process.env)
    const onStop = (signal: NodeJS.Signals) => {
      // One Ctrl-C delivered twice: the terminal's SIGINT reaches npm too, which passes its copy on (no shell between).
      if (npm && signal === first?.signal && performance.now() - first.at < DUPLICATE_MILLIS) return
      if (stopping && delayed && !Deferred.isDoneUnsafe(cut)) {
        // Said first, then the delay ends (and says so).
        log(
          Effect.logInfo(
            `${signal} received again: cutting the shutdown delay short (${signal} once more to kill every worker at once)`
          )
        )
        return void Deferred.doneUnsafe(cut, Effect.void)
      }
      if (stopping) return log(force(signal, supervisor))
      // Said before the supervisor logs how many workers it stops, and how (this listener runs first).
      log(
        Effect.logInfo(
          delayed
            ? `${signal} received: stopping after the shutdown delay (${signal} again to stop now)`
            : `${signal} received: stopping (${signal} again to kill every worker at once)`
        )
      )
      stopping = true
      first = { signal, at: performance.now() }
    }
    const onControl = (signal: NodeJS.Signals) => {
      if (stopping) return log(Effect.logInfo(`${signal} received: stopping, ignored`))
      Queue.offerUnsafe(signals, signal as Control)
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
        })
    )
    return { signals, supervisor, stopping: Effect.sync(() => stopping), cut }
  })

/** A second SIGINT or SIGTERM: SIGKILL to every process the supervisor has now (none before it has started). */
const force = (signal: NodeJS.Signals, supervisor: Deferred.Deferred<SupervisorHandle>): Effect.Effect<void> =>
  Effect.gen(function* () {
    yield* Effect.logWarning(`${signal} received again: killing every worker now (SIGKILL)`)
    const handle = yield* Deferred.poll(supervisor)
    if (Option.isNone(handle)) return
    const killed = yield* Effect.flatMap(handle.value, (h) => h.kill)
    if (killed.length > 0) yield* Effect.logInfo(`SIGKILL sent to ${killed.map(Status.processName).join(", ")}`)
  })

/**
 * Acts on each control signal until interrupted, and gives the supervisor to
 * the listener's second SIGINT or SIGTERM. `report` shows the status
 * (SIGUSR2). Reloads and scaling run in the background, so a status request
 * is answered during a reload; a SIGHUP during a reload is ignored (and
 * logged). Scaling requests are applied in the order they came, each one from
 * the count the supervisor has when it is applied (`SupervisorHandle.processes`,
 * whatever changed it: a `prefork ctl scale`, an earlier signal).
 *
 * @since 0.1.0
 * @category constructors
 */
export const control = (
  handle: SupervisorHandle,
  listener: Listener,
  report: Effect.Effect<void>
): Effect.Effect<never, never, Scope.Scope> =>
  Effect.gen(function* () {
    yield* Deferred.succeed(listener.supervisor, handle)
    let reloading = false
    /** One worker more (SIGTTIN) or fewer (SIGTTOU), from the count there is now. */
    const scaleBy = (signal: "SIGTTIN" | "SIGTTOU") =>
      Effect.suspend(() => {
        const from = handle.processes
        if (signal === "SIGTTOU" && from <= 1) return Effect.logInfo("SIGTTOU received: already at 1 process, ignored")
        const to = signal === "SIGTTIN" ? from + 1 : from - 1
        return Effect.logInfo(`${signal} received: scaling from ${from} to ${to} process${to === 1 ? "" : "es"}`).pipe(
          Effect.andThen(handle.scale(to)),
          Effect.catchTag("InvalidOptions", (e) => Effect.logWarning(e.message))
        )
      })
    const scaleRequests = yield* Queue.unbounded<"SIGTTIN" | "SIGTTOU">()
    // One fiber applies every scaling request in turn: each reads the count once the one before it is done.
    yield* Effect.forkScoped(Effect.forever(Effect.flatMap(Queue.take(scaleRequests), scaleBy)))
    const reload = Effect.suspend(() => {
      reloading = true
      // Logged as it starts and as it ends (Reload.ts); a failure is logged there and goes no further.
      return Effect.ignore(Reload.reload(handle, "SIGHUP received"))
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
        case "SIGTTOU":
          return Queue.offer(scaleRequests, signal)
      }
    }
    return yield* Effect.forever(Effect.flatMap(Queue.take(listener.signals), act))
  })
