/**
 * Health endpoints for an orchestrator (Kubernetes' probes, a load balancer's
 * health check), computed from a supervisor's state and served by the
 * supervising process itself: what `prefork --health <addr>` serves.
 *
 * | path        | 200 when                                                                  | else |
 * | ----------- | ------------------------------------------------------------------------- | ---- |
 * | `/livez`    | the supervisor's event loop and fibers run (they compute the answer)      | no answer: a blocked supervisor answers nothing, and the probe times out |
 * | `/readyz`   | at least `minReady` workers are ready (default: every slot), and the supervisor is neither draining ({@link HealthServer.drain}, a stop signal) nor stopping | 503, with the reason in one line of text |
 * | `/startupz` | every slot has been ready at the same moment once (the first start is over) | 503 |
 *
 * Answers are plain text, `Cache-Control: no-store`, one request per
 * connection; only `GET` and `HEAD` (else 405); any other path is a 404. Every
 * connection has a budget (a head deadline, a connection deadline, a
 * connection cap that evicts the oldest idle client): see
 * {@link limitsFromEnv}.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Supervisor } from "effect-prefork"
 * import { Health, NodeProcessSpawner } from "effect-prefork/node"
 *
 * const program = Effect.scoped(
 *   Effect.gen(function* () {
 *     const handle = yield* Supervisor.start({ processes: 4, command: "node", args: ["server.js"] })
 *     const health = yield* Health.serve(handle, { host: "0.0.0.0", port: 8081 })
 *     // On interruption (SIGTERM under NodeRuntime.runMain): /readyz says 503 at once, workers serve 5 s more, then stop.
 *     yield* Health.delayStop("5 seconds", { health })
 *     return yield* handle.await
 *   })
 * ).pipe(Effect.provide(NodeProcessSpawner.layer))
 * ```
 *
 * @since 0.1.0
 */
import type * as Net from "node:net"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import { type BindFailed, InvalidOptions } from "../Errors.ts"
import type { SlotStatus } from "../Model.ts"
import * as RestartPolicy from "../RestartPolicy.ts"
import type { SupervisorHandle } from "../Supervisor.ts"
import * as Endpoint from "./internal/endpoint.ts"

/**
 * The paths served.
 *
 * @since 0.1.0
 * @category constants
 */
export const PATHS = { live: "/livez", ready: "/readyz", startup: "/startupz" } as const

/**
 * The environment variables that override the connection budget (for tests,
 * or a machine that needs other values): milliseconds for the timeouts, a
 * count for the connections (still at most a sixteenth of the open-file
 * limit, and at most 64).
 *
 * @since 0.1.0
 * @category constants
 */
export const ENV = {
  headTimeout: "PREFORK_HEALTH_HEAD_TIMEOUT_MS",
  connectionTimeout: "PREFORK_HEALTH_TIMEOUT_MS",
  maxConnections: "PREFORK_HEALTH_MAX_CONNECTIONS"
} as const

/**
 * The budget of the health server's connections.
 *
 * @since 0.1.0
 * @category models
 */
export type Limits = Endpoint.Limits

/**
 * The limits: a request head within 10 s, a connection closed 20 s after its
 * accept, at most 64 connections (a sixteenth of the open-file limit when
 * that is less), each overridden by its variable of {@link ENV}. A bad value
 * is an `InvalidOptions` naming the variable.
 *
 * @since 0.1.0
 * @category constructors
 */
export const limitsFromEnv = (
  env: Readonly<Record<string, string | undefined>>,
  fileLimit: number | undefined = Endpoint.openFileLimit()
): Effect.Effect<Limits, InvalidOptions> => Endpoint.limitsFromEnv(ENV, env, fileLimit)

/**
 * Where to listen: a host (default: every interface) and a port (0: any
 * free port).
 *
 * @since 0.1.0
 * @category models
 */
export interface Address {
  readonly host?: string | undefined
  readonly port: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /**
   * How many workers must be ready for `/readyz` to answer 200. Default:
   * every slot (`SupervisorHandle.processes` at the moment of the probe).
   * A number above the slots means every slot.
   */
  readonly minReady?: number | undefined
  /** Also 503 on `/readyz` while this says `true` (the command: a stop signal was received). */
  readonly draining?: Effect.Effect<boolean> | undefined
  /** The address as written, for errors. Default: `host:port`. */
  readonly given?: string | undefined
  /** Default: {@link limitsFromEnv} of the process's environment. */
  readonly limits?: Limits | undefined
}

/**
 * A health server, open while the scope that started it is.
 *
 * @since 0.1.0
 * @category models
 */
export interface HealthServer {
  /** The address it listens on, with the real port. */
  readonly address: Net.AddressInfo
  /** `http://host:port`: the paths of {@link PATHS} go after it. */
  readonly url: string
  /** From now on `/readyz` answers 503 (`draining`), for good: the start of a graceful shutdown. */
  readonly drain: Effect.Effect<void>
}

/**
 * What the supervisor looks like to a probe at one moment.
 *
 * @since 0.1.0
 * @category models
 */
export interface State {
  /** The slots, or none before the supervisor has started. */
  readonly slots: Option.Option<ReadonlyArray<SlotStatus>>
  readonly processes: number
  readonly started: boolean
  readonly draining: boolean
  readonly minReady: number | undefined
}

/**
 * An answer: 200 or 503, and one line saying why.
 *
 * @since 0.1.0
 * @category models
 */
export interface Verdict {
  readonly ok: boolean
  readonly reason: string
}

const plural = (n: number) => `${n} worker${n === 1 ? "" : "s"}`

/**
 * `/readyz`'s verdict for a state: not before the supervisor has started, not
 * while draining, not while the supervisor stops its workers, and not with
 * fewer ready workers than `minReady` (default every slot). Only the slots
 * below `processes` count (a slot being scaled away does not).
 *
 * @since 0.1.0
 * @category verdicts
 */
export const readiness = (state: State): Verdict => {
  if (state.draining) return { ok: false, reason: "draining: stopping soon" }
  if (Option.isNone(state.slots)) return { ok: false, reason: "starting: the supervisor has not started yet" }
  const slots = state.slots.value.filter((s) => s.taskId < state.processes)
  if (slots.some((s) => s.state === "stopping" || s.state === "stopped")) {
    return { ok: false, reason: "stopping: the supervisor is stopping its workers" }
  }
  const ready = slots.filter((s) => s.state === "running").length
  const wanted = Math.min(state.minReady ?? state.processes, state.processes)
  const of = `${ready} of ${plural(state.processes)} ready`
  return ready >= wanted && ready > 0
    ? { ok: true, reason: `ready: ${of}` }
    : { ok: false, reason: `not ready: ${of}, ${wanted} needed` }
}

/**
 * `/startupz`'s verdict: 200 once every slot has been ready at the same
 * moment (`SupervisorHandle.awaitReady` completed), for good.
 *
 * @since 0.1.0
 * @category verdicts
 */
export const startup = (state: State): Verdict => {
  if (state.started) return { ok: true, reason: "started" }
  const ready = Option.match(state.slots, {
    onNone: () => 0,
    onSome: (slots) => slots.filter((s) => s.taskId < state.processes && s.state === "running").length
  })
  return { ok: false, reason: `starting: ${ready} of ${plural(state.processes)} ready` }
}

const answerOf = (verdict: Verdict): Endpoint.Answer => ({
  status: verdict.ok ? 200 : 503,
  body: `${verdict.reason}\n`
})

/**
 * Serves {@link PATHS} on `address` for the life of the scope, from
 * `supervisor`: a handle, or a `Deferred` completed with one once the
 * supervisor has started (then the server can listen first, and close only
 * after the supervisor has stopped: until the handle comes `/readyz` and
 * `/startupz` say "starting"). A `minReady` that is not a whole number >= 1 is
 * an `InvalidOptions`; an address that cannot be bound a `BindFailed`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const serve = (
  supervisor: SupervisorHandle | Deferred.Deferred<SupervisorHandle>,
  address: Address,
  options: Options = {}
): Effect.Effect<HealthServer, BindFailed | InvalidOptions, Scope.Scope> =>
  Effect.gen(function* () {
    const { minReady } = options
    if (minReady !== undefined && (!Number.isInteger(minReady) || minReady < 1)) {
      return yield* new InvalidOptions({
        field: "minReady",
        message: `minReady must be a whole number >= 1, got ${String(minReady)}`
      })
    }
    const pending = Deferred.isDeferred(supervisor) ? (supervisor as Deferred.Deferred<SupervisorHandle>) : undefined
    const handle: Effect.Effect<Option.Option<SupervisorHandle>> =
      pending === undefined
        ? Effect.succeedSome(supervisor as SupervisorHandle)
        : Effect.flatMap(Deferred.poll(pending), (polled) =>
            Option.isNone(polled) ? Effect.succeedNone : Effect.asSome(polled.value)
          )
    let drained = false
    let started = false
    // Startup is over once every slot is ready at once; a supervision that ends first never starts.
    yield* Effect.forkScoped(
      (pending === undefined ? Effect.succeed(supervisor as SupervisorHandle) : Deferred.await(pending)).pipe(
        Effect.flatMap((h) => h.awaitReady),
        Effect.andThen(Effect.sync(() => (started = true))),
        Effect.ignore
      )
    )
    const state = Effect.gen(function* () {
      const h = yield* handle
      const slots = Option.isSome(h) ? Option.some(yield* h.value.status) : Option.none()
      const draining = drained || (options.draining !== undefined && (yield* options.draining))
      return { slots, processes: Option.isSome(h) ? h.value.processes : 0, started, draining, minReady } as State
    })
    const routes: Endpoint.Routes = (path) => {
      switch (path) {
        case PATHS.live:
          return Effect.succeed({ status: 200, body: "live\n" })
        case PATHS.ready:
          return Effect.map(state, (s) => answerOf(readiness(s)))
        case PATHS.startup:
          return Effect.map(state, (s) => answerOf(startup(s)))
        default:
          return undefined
      }
    }
    const given =
      options.given ?? `${address.host?.includes(":") ? `[${address.host}]` : (address.host ?? "")}:${address.port}`
    const bound = yield* Endpoint.serve(address, {
      given,
      label: "--health",
      limits: options.limits ?? (yield* limitsFromEnv(process.env)),
      routes,
      notFound: `Not found: health is served on ${Object.values(PATHS).join(", ")}\n`
    })
    return {
      address: bound,
      url: Endpoint.urlOf(bound, ""),
      drain: Effect.sync(() => void (drained = true))
    }
  })

/**
 * A graceful shutdown's delay, as Kubernetes needs it: when the scope closes
 * because it was interrupted (SIGTERM or SIGINT under `NodeRuntime.runMain`),
 * `health` (if given) starts draining (`/readyz` 503), then the scope's
 * earlier finalizers — the supervisor's stop among them — wait `delay`, so
 * that the endpoints are removed upstream while every worker still serves.
 * Completing `cut` ends the wait at once (the command: a second signal); it
 * is completed when the wait ends, either way. A scope closed any other way
 * (the supervision ended) is not delayed. Call it after `Supervisor.start`:
 * finalizers run in reverse order. Logs the delay's start and end.
 *
 * @since 0.1.0
 * @category constructors
 */
export const delayStop = (
  delay: Duration.Input,
  options: { readonly health?: HealthServer | undefined; readonly cut?: Deferred.Deferred<void> | undefined } = {}
): Effect.Effect<void, InvalidOptions, Scope.Scope> =>
  Effect.gen(function* () {
    const decoded = yield* RestartPolicy.decodeDuration("shutdownDelay", delay, 0)
    const cut = options.cut ?? (yield* Deferred.make<void>())
    yield* Effect.addFinalizer((exit) => {
      if (!Exit.hasInterrupts(exit)) return Effect.void
      const seconds = Duration.format(decoded)
      return Effect.gen(function* () {
        if (options.health !== undefined) yield* options.health.drain
        if (Duration.isZero(decoded) || (yield* Deferred.isDone(cut))) return
        yield* Effect.logInfo(`Shutdown delay: workers serve ${seconds} more before they are stopped (/readyz: 503)`)
        const cutShort = yield* Effect.raceFirst(
          Effect.as(Effect.sleep(decoded), false),
          Effect.as(Deferred.await(cut), true)
        )
        yield* Effect.logInfo(
          cutShort ? "Shutdown delay cut short: stopping the workers" : "Shutdown delay over: stopping the workers"
        )
      }).pipe(Effect.ensuring(Deferred.succeed(cut, undefined)))
    })
  })
