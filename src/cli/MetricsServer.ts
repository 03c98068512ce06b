/**
 * `prefork --metrics <addr>`: an HTTP server in prefork itself that serves
 * every metric of its registry on `GET /metrics` in Prometheus text format
 * 0.0.4, for Prometheus (or anything that scrapes it) to read. Any other path
 * is a 404.
 *
 * It speaks just enough HTTP/1.1 for a scraper, on `node:net` (which prefork
 * has loaded anyway), with a budget for every connection (head deadline,
 * connection deadline, a connection cap with eviction): the endpoint
 * `--health` uses too (`node/internal/endpoint.ts` says how, and why).
 * A scrape is answered from the registry, never waiting on the supervisor.
 *
 * @since 0.1.0
 */
import type * as Net from "node:net"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import type * as Scope from "effect/Scope"
import type { BindFailed, InvalidOptions } from "../Errors.ts"
import * as Endpoint from "../node/internal/endpoint.ts"
import * as Prometheus from "../internal/prometheus.ts"
import type { HostPort } from "./Argv.ts"

/**
 * The path metrics are served on.
 *
 * @since 0.1.0
 * @category constants
 */
export const PATH = "/metrics"

/**
 * The budget of the metrics server's connections.
 *
 * @since 0.1.0
 * @category models
 */
export type Limits = Endpoint.Limits

/**
 * The most connections the metrics server keeps open, whatever the open-file
 * limit: a scraper needs one.
 *
 * @since 0.1.0
 * @category constants
 */
export const MAX_CONNECTIONS: number = Endpoint.MAX_CONNECTIONS

/**
 * The environment variables that override the limits (for tests, or a
 * machine that needs other values): milliseconds for the timeouts, a count for
 * the connections (still at most a sixteenth of the open-file limit).
 *
 * @since 0.1.0
 * @category constants
 */
export const ENV = {
  headTimeout: "PREFORK_METRICS_HEAD_TIMEOUT_MS",
  connectionTimeout: "PREFORK_METRICS_TIMEOUT_MS",
  maxConnections: "PREFORK_METRICS_MAX_CONNECTIONS"
} as const

/**
 * The soft limit on open files of this process (`ulimit -n`), from
 * `/proc/self/limits`; `undefined` when unlimited or unknown (not Linux).
 *
 * @since 0.1.0
 * @category utils
 */
export const openFileLimit: () => number | undefined = Endpoint.openFileLimit

/**
 * The connection cap for an open-file limit: a sixteenth of it, at most
 * `ceiling` (64 by default) and at least 1. `ulimit -n 1024` gives 64,
 * `ulimit -n 128` gives 8.
 *
 * @since 0.1.0
 * @category utils
 */
export const connectionCap: (fileLimit: number | undefined, ceiling?: number) => number = Endpoint.connectionCap

/**
 * The limits: 10 s for the head, 20 s for the whole connection, and
 * {@link connectionCap} of this process's open-file limit, each overridden by
 * its variable of {@link ENV} when set. A value that is not a positive whole
 * number, or a connection timeout shorter than the head's, is an
 * `InvalidOptions` naming the variable.
 *
 * @since 0.1.0
 * @category constructors
 */
export const limitsFromEnv = (
  env: Readonly<Record<string, string | undefined>>,
  fileLimit: number | undefined = openFileLimit()
): Effect.Effect<Limits, InvalidOptions> => Endpoint.limitsFromEnv(ENV, env, fileLimit)

/**
 * The URL a server listens on, as a browser or `curl` takes it:
 * `http://127.0.0.1:9464/metrics`, `http://[::1]:9464/metrics`.
 *
 * @since 0.1.0
 * @category utils
 */
export const urlOf = (address: Net.AddressInfo): string => Endpoint.urlOf(address, PATH)

/**
 * Listens on `address` for the life of the scope and returns the URL it
 * serves (with the real port when `address.port` is 0). `given` is the
 * address as written, for the error: one that cannot be bound is a
 * `BindFailed`. `limits` default to {@link limitsFromEnv} of the process's
 * environment. Closing the scope closes the server and every connection.
 *
 * @since 0.1.0
 * @category constructors
 */
export const serve = (
  address: HostPort,
  given: string,
  limits?: Limits | undefined
): Effect.Effect<string, BindFailed | InvalidOptions, Scope.Scope> =>
  Effect.gen(function* () {
    const context = yield* Effect.context<never>()
    const scrape = Effect.sync((): Endpoint.Answer => ({
      status: 200,
      body: Prometheus.encode(Metric.snapshotUnsafe(context)),
      contentType: Prometheus.CONTENT_TYPE
    }))
    const bound = yield* Endpoint.serve(address, {
      given,
      label: "--metrics",
      limits: limits ?? (yield* limitsFromEnv(process.env)),
      routes: (path) => (path === PATH ? scrape : undefined),
      notFound: `Not found: prefork serves its metrics on ${PATH}\n`
    })
    return urlOf(bound)
  })
