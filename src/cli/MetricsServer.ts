/**
 * `prefork --metrics <addr>`: an HTTP server in prefork itself that serves
 * every metric of its registry on `GET /metrics` in Prometheus text format
 * 0.0.4, for Prometheus (or anything that scrapes it) to read. Any other path
 * is a 404.
 *
 * It speaks just enough HTTP/1.1 for a scraper, on `node:net` (which prefork
 * has loaded anyway): one request per connection, answered with
 * `Connection: close`. `node:http` would cost the supervising process
 * 8.5 MiB of resident memory for the same answers; this costs 0.2 MiB
 * (measured with the bundled command, Node 24). A request is bounded: its head must fit in 16 KiB and arrive
 * within 10 seconds. A scrape is answered synchronously from the registry,
 * never waiting on the supervisor.
 *
 * @since 0.1.0
 */
import * as Net from "node:net"
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

const MAX_HEAD = 16 * 1024
const TIMEOUT_MS = 10_000

const REASONS: Readonly<Record<number, string>> = {
  200: "OK",
  400: "Bad Request",
  404: "Not Found",
  405: "Method Not Allowed",
  408: "Request Timeout",
  431: "Request Header Fields Too Large"
}

/**
 * The URL a server listens on, as a browser or `curl` takes it:
 * `http://127.0.0.1:9464/metrics`, `http://[::1]:9464/metrics`.
 *
 * @since 0.1.0
 * @category utils
 */
export const urlOf = (address: Net.AddressInfo): string =>
  `http://${address.family === "IPv6" ? `[${address.address}]` : address.address}:${address.port}${PATH}`

/** Writes one response and closes the connection once it is sent. */
const respond = (
  socket: Net.Socket,
  status: number,
  body: string,
  options: { readonly contentType?: string; readonly head?: boolean; readonly allow?: string } = {}
): void => {
  const head = [
    `HTTP/1.1 ${status} ${REASONS[status]}`,
    `Content-Type: ${options.contentType ?? "text/plain; charset=utf-8"}`,
    `Content-Length: ${Buffer.byteLength(body)}`,
    "Cache-Control: no-store",
    "Connection: close",
    ...(options.allow === undefined ? [] : [`Allow: ${options.allow}`])
  ]
  socket.end(`${head.join("\r\n")}\r\n\r\n${options.head === true ? "" : body}`)
}

/** The answer to a request head (everything before its blank line). */
const answer = (socket: Net.Socket, head: string, scrape: () => string): void => {
  const lineEnd = head.indexOf("\r\n")
  const requestLine = /^([A-Z]+) (\S+) HTTP\/1\.[01]$/.exec(lineEnd === -1 ? head : head.slice(0, lineEnd))
  if (requestLine === null) return respond(socket, 400, "Bad request\n")
  const [, method, target] = requestLine
  const path = target!.split("?")[0]
  if (path !== PATH) return respond(socket, 404, `Not found: prefork serves its metrics on ${PATH}\n`)
  if (method !== "GET" && method !== "HEAD") return respond(socket, 405, "Method not allowed\n", { allow: "GET, HEAD" })
  respond(socket, 200, scrape(), { contentType: Prometheus.CONTENT_TYPE, head: method === "HEAD" })
}

/** Reads one request head from a connection and answers it. */
const connection = (scrape: () => string, sockets: Set<Net.Socket>) => (socket: Net.Socket) => {
  sockets.add(socket)
  let head = ""
  let answered = false
  socket.setEncoding("latin1")
  socket.setTimeout(TIMEOUT_MS)
  socket.on("data", (chunk: string) => {
    if (answered) return
    head += chunk
    const end = head.indexOf("\r\n\r\n")
    if (end === -1 && head.length <= MAX_HEAD) return
    answered = true
    if (end === -1 || end > MAX_HEAD) return respond(socket, 431, "Request head too large\n")
    answer(socket, head.slice(0, end), scrape)
  })
  socket.on("timeout", () => {
    if (answered) return socket.destroy()
    answered = true
    respond(socket, 408, "Request timeout\n")
    socket.destroySoon()
  })
  // A connection that fails concerns its client only: never prefork.
  socket.on("error", () => socket.destroy())
  socket.on("close", () => sockets.delete(socket))
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
        const sockets = new Set<Net.Socket>()
        const server = Net.createServer(connection(() => Prometheus.encode(Metric.snapshotUnsafe(context)), sockets))
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
        server.on("error", () => {})
        return { server, sockets }
      }),
      ({ server, sockets }) =>
        Effect.callback<void>((resume) => {
          server.close(() => resume(Effect.void))
          for (const socket of sockets) socket.destroy()
        })
    ),
    ({ server }) => urlOf(server.address() as Net.AddressInfo)
  )
