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
 * (measured with the bundled command, Node 24). A scrape is answered
 * synchronously from the registry, never waiting on the supervisor.
 *
 * Anyone who can reach the address can connect, so every connection has a
 * budget (see {@link Limits}), and a client over budget is cut, never prefork:
 *
 * - its request head must fit in 16 KiB (else 431) and arrive completely
 *   within `headTimeout` of the accept (else 408): an absolute deadline, so a
 *   client sending a byte at a time gains nothing;
 * - the whole connection, answer included, lasts at most `connectionTimeout`
 *   from the accept: a client that does not read its answer is closed then;
 * - at most `maxConnections` are open at once, derived from the open-file
 *   limit so that the metrics server never takes the descriptors a worker's
 *   restart needs. At the cap, a new connection closes the oldest one that
 *   has not sent its whole head yet (else the oldest one): a scraper sends its
 *   head at once and is answered at its first data, so idle or slow clients
 *   holding every connection do not keep it out.
 *
 * The deadlines are timers on Node's monotonic clock: a wall-clock jump moves
 * none of them.
 *
 * @since 0.1.0
 */
import { readFileSync } from "node:fs"
import * as Net from "node:net"
import { performance } from "node:perf_hooks"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import type * as Scope from "effect/Scope"
import { BindFailed, InvalidOptions } from "../Errors.ts"
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
/** How long a connection whose answer is sent waits for its client to close. */
const LINGER_MS = 1_000

/**
 * The budget of the metrics server's connections.
 *
 * @since 0.1.0
 * @category models
 */
export interface Limits {
  /** Milliseconds from the accept within which the whole request head must have arrived (else 408). */
  readonly headTimeout: number
  /** Milliseconds from the accept after which the connection is closed, answered or not. */
  readonly connectionTimeout: number
  /** Connections open at once; at the cap a new one closes the oldest that has not sent its head. */
  readonly maxConnections: number
}

/**
 * The most connections the metrics server keeps open, whatever the open-file
 * limit: a scraper needs one.
 *
 * @since 0.1.0
 * @category constants
 */
export const MAX_CONNECTIONS = 64

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
export const openFileLimit = (): number | undefined => {
  try {
    const line = /^Max open files\s+(\d+|unlimited)\s/m.exec(readFileSync("/proc/self/limits", "latin1"))
    return line === null || line[1] === "unlimited" ? undefined : Number(line[1])
  } catch {
    return undefined
  }
}

/**
 * The connection cap for an open-file limit: a sixteenth of it, at most
 * `ceiling` (64 by default) and at least 1. `ulimit -n 1024` gives 64,
 * `ulimit -n 128` gives 8.
 *
 * @since 0.1.0
 * @category utils
 */
export const connectionCap = (fileLimit: number | undefined, ceiling: number = MAX_CONNECTIONS): number =>
  Math.max(1, Math.min(ceiling, fileLimit === undefined ? ceiling : Math.floor(fileLimit / 16)))

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
): Effect.Effect<Limits, InvalidOptions> =>
  Effect.gen(function* () {
    const read = Effect.fnUntraced(function* (name: string, fallback: number) {
      const given = env[name]
      if (given === undefined || given === "") return fallback
      if (!/^\d{1,9}$/.test(given) || Number(given) === 0) {
        return yield* new InvalidOptions({
          field: name,
          message: `${name}: expected a whole number above 0, got "${given}"`
        })
      }
      return Number(given)
    })
    const headTimeout = yield* read(ENV.headTimeout, 10_000)
    const connectionTimeout = yield* read(ENV.connectionTimeout, Math.max(20_000, headTimeout))
    if (connectionTimeout < headTimeout) {
      return yield* new InvalidOptions({
        field: ENV.connectionTimeout,
        message: `${ENV.connectionTimeout} (${connectionTimeout}) is shorter than ${ENV.headTimeout} (${headTimeout})`
      })
    }
    const maxConnections = connectionCap(fileLimit, yield* read(ENV.maxConnections, MAX_CONNECTIONS))
    return { headTimeout, connectionTimeout, maxConnections }
  })

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

/** A connection's state: reading its head, or answered (being written, or closing). */
interface Connection {
  answered: boolean
}

/** Makes room for one more connection: the oldest still reading its head goes, else the oldest. */
const evict = (connections: Map<Net.Socket, Connection>): void => {
  let victim: Net.Socket | undefined
  for (const [socket, connection] of connections) {
    victim ??= socket
    if (!connection.answered) {
      victim = socket
      break
    }
  }
  if (victim !== undefined) {
    connections.delete(victim)
    victim.destroy()
  }
}

/**
 * The listen backlog: half the cap. Connections are accepted in batches of up
 * to the backlog, each past the cap closing the oldest one still reading its
 * head, so a batch smaller than the cap never closes a connection accepted in
 * the same batch (a scraper's head is read at the next turn of the loop).
 */
const backlogOf = (limits: Limits): number => Math.max(1, Math.floor(limits.maxConnections / 2))

/** Reads one request head from a connection and answers it, within the limits. */
const connection =
  (scrape: () => string, connections: Map<Net.Socket, Connection>, limits: Limits) => (socket: Net.Socket) => {
    while (connections.size >= limits.maxConnections) evict(connections)
    const accepted = performance.now()
    const state: Connection = { answered: false }
    connections.set(socket, state)
    let head = ""
    /** Closes the connection at its deadline (from the accept), or within `linger` from now if that is sooner. */
    const closeAtDeadline = (linger = Infinity) => {
      clearTimeout(timer)
      const left = limits.connectionTimeout - (performance.now() - accepted)
      timer = setTimeout(() => socket.destroy(), Math.max(0, Math.min(left, linger)))
    }
    let timer = setTimeout(() => {
      if (state.answered) return socket.destroy()
      state.answered = true
      head = ""
      respond(socket, 408, "Request timeout\n")
      closeAtDeadline()
    }, limits.headTimeout)
    socket.setEncoding("latin1")
    socket.on("data", (chunk: string) => {
      if (state.answered) return
      head += chunk
      const end = head.indexOf("\r\n\r\n")
      if (end === -1 && head.length <= MAX_HEAD) return
      state.answered = true
      closeAtDeadline()
      if (end === -1 || end > MAX_HEAD) respond(socket, 431, "Request head too large\n")
      else answer(socket, head.slice(0, end), scrape)
      head = ""
    })
    // The answer is sent: the client has a moment to read it and close its side, no more.
    socket.on("finish", () => closeAtDeadline(LINGER_MS))
    // A connection that fails concerns its client only: never prefork.
    socket.on("error", () => socket.destroy())
    socket.on("close", () => {
      clearTimeout(timer)
      if (connections.get(socket) === state) connections.delete(socket)
    })
  }

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
  Effect.map(
    Effect.acquireRelease(
      Effect.gen(function* () {
        const context = yield* Effect.context<never>()
        const budget = limits ?? (yield* limitsFromEnv(process.env))
        const sockets = new Map<Net.Socket, Connection>()
        const server = Net.createServer(
          connection(() => Prometheus.encode(Metric.snapshotUnsafe(context)), sockets, budget)
        )
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
          server.listen({ host: address.host, port: address.port, exclusive: true, backlog: backlogOf(budget) }, () => {
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
          for (const socket of sockets.keys()) socket.destroy()
        })
    ),
    ({ server }) => urlOf(server.address() as Net.AddressInfo)
  )
