/**
 * `prefork --metrics <addr>`: an HTTP server in prefork itself that serves
 * every metric of its registry on `GET /metrics` in Prometheus text format
 * 0.0.4, for Prometheus (or anything that scrapes it) to read. Any other path
 * is a 404.
 *
 * It is plain `node:http`, loaded only when `--metrics` is given, so a
 * prefork without it pays nothing. A scrape is answered synchronously from
 * the registry, never waiting on the supervisor.
 *
 * @since 0.1.0
 */
import type * as Http from "node:http"
import type { AddressInfo } from "node:net"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import type * as Scope from "effect/Scope"
import { BindFailed } from "../Errors.ts"
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
 * The URL a server listens on, as a browser or `curl` takes it:
 * `http://127.0.0.1:9464/metrics`, `http://[::1]:9464/metrics`.
 *
 * @since 0.1.0
 * @category utils
 */
export const urlOf = (address: AddressInfo): string =>
  `http://${address.family === "IPv6" ? `[${address.address}]` : address.address}:${address.port}${PATH}`

/** Answers one request from the registry of `context`. */
const handler =
  (context: Parameters<typeof Metric.snapshotUnsafe>[0]) =>
  (request: Http.IncomingMessage, response: Http.ServerResponse) => {
    const path = (request.url ?? "/").split("?")[0]
    if (path !== PATH) {
      response.writeHead(404, { "content-type": "text/plain; charset=utf-8" })
      response.end(`Not found: prefork serves its metrics on ${PATH}\n`)
      return
    }
    if (request.method !== "GET" && request.method !== "HEAD") {
      response.writeHead(405, { allow: "GET, HEAD", "content-type": "text/plain; charset=utf-8" })
      response.end("Method not allowed\n")
      return
    }
    const body = Prometheus.encode(Metric.snapshotUnsafe(context))
    response.writeHead(200, {
      "content-type": Prometheus.CONTENT_TYPE,
      "content-length": Buffer.byteLength(body),
      "cache-control": "no-store"
    })
    response.end(request.method === "HEAD" ? undefined : body)
  }

/**
 * Listens on `address` for the life of the scope and returns the URL it
 * serves (with the real port when `address.port` is 0). `given` is the
 * address as written, for the error: one that cannot be bound is a
 * `BindFailed`. Closing the scope closes the server and every connection.
 *
 * @since 0.1.0
 * @category constructors
 */
export const serve = (address: HostPort, given: string): Effect.Effect<string, BindFailed, Scope.Scope> =>
  Effect.map(
    Effect.acquireRelease(
      Effect.gen(function* () {
        const context = yield* Effect.context<never>()
        const http = yield* Effect.promise(() => import("node:http"))
        const server = http.createServer(handler(context))
        yield* Effect.callback<void, BindFailed>((resume) => {
          const failed = (error: NodeJS.ErrnoException) =>
            resume(
              Effect.fail(
                new BindFailed({
                  address: given,
                  ...(error.code === undefined ? {} : { code: error.code }),
                  message: `--metrics: cannot listen on ${given}: ${error.code ?? error.message}`
                })
              )
            )
          server.once("error", failed)
          server.listen({ host: address.host, port: address.port, exclusive: true }, () => {
            server.off("error", failed)
            resume(Effect.void)
          })
        })
        // A failing connection must never bring prefork down: Node answers bad requests itself.
        server.on("error", () => {})
        return server
      }),
      (server) =>
        Effect.callback<void>((resume) => {
          server.close(() => resume(Effect.void))
          server.closeAllConnections()
        })
    ),
    (server) => urlOf(server.address() as AddressInfo)
  )
