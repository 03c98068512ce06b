/**
 * A small HTTP/1.1 endpoint in the supervising process, on `node:net`, with a
 * budget: what `--metrics` (`cli/MetricsServer.ts`) and `--health`
 * (`node/Health.ts`) serve. One request per connection, answered with
 * `Connection: close`; only `GET` and `HEAD`; a path it does not route is a
 * 404. `node:http` would cost the supervising process 8.5 MiB of resident
 * memory for the same answers; this costs 0.2 MiB (measured with the bundled
 * command, Node 24).
 *
 * Anyone who can reach the address can connect, so every connection has a
 * budget (see {@link Limits}), and a client over budget is cut, never the
 * supervisor:
 *
 * - its request head must fit in 16 KiB (else 431) and arrive completely
 *   within `headTimeout` of the accept (else 408): an absolute deadline, so a
 *   client sending a byte at a time gains nothing;
 * - the whole connection, answer included, lasts at most `connectionTimeout`
 *   from the accept: a client that does not read its answer is closed then;
 * - at most `maxConnections` are open at once, derived from the open-file
 *   limit so that the endpoint never takes the descriptors a worker's restart
 *   needs. At the cap, a new connection closes the oldest one that has not
 *   sent its whole head yet (else the oldest one): a probe sends its head at
 *   once and is answered at its first data, so idle or slow clients holding
 *   every connection do not keep it out.
 *
 * The deadlines are timers on Node's monotonic clock: a wall-clock jump moves
 * none of them.
 */
import { readFileSync } from "node:fs"
import * as Net from "node:net"
import { performance } from "node:perf_hooks"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { BindFailed, InvalidOptions } from "../../Errors.ts"

const MAX_HEAD = 16 * 1024
/** How long a connection whose answer is sent waits for its client to close. */
const LINGER_MS = 1_000

/** The budget of an endpoint's connections. */
export interface Limits {
  /** Milliseconds from the accept within which the whole request head must have arrived (else 408). */
  readonly headTimeout: number
  /** Milliseconds from the accept after which the connection is closed, answered or not. */
  readonly connectionTimeout: number
  /** Connections open at once; at the cap a new one closes the oldest that has not sent its head. */
  readonly maxConnections: number
}

/** The most connections an endpoint keeps open, whatever the open-file limit: a scraper or a probe needs one. */
export const MAX_CONNECTIONS = 64

/** The environment variables that override each limit. */
export interface LimitNames {
  readonly headTimeout: string
  readonly connectionTimeout: string
  readonly maxConnections: string
}

/**
 * The soft limit on open files of this process (`ulimit -n`), from
 * `/proc/self/limits`; `undefined` when unlimited or unknown (not Linux).
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
 */
export const connectionCap = (fileLimit: number | undefined, ceiling: number = MAX_CONNECTIONS): number =>
  Math.max(1, Math.min(ceiling, fileLimit === undefined ? ceiling : Math.floor(fileLimit / 16)))

/**
 * The limits: 10 s for the head, 20 s for the whole connection, and
 * {@link connectionCap} of the open-file limit, each overridden by its
 * variable in `names` when set. A value that is not a positive whole number,
 * or a connection timeout shorter than the head's, is an `InvalidOptions`
 * naming the variable.
 */
export const limitsFromEnv = (
  names: LimitNames,
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
    const headTimeout = yield* read(names.headTimeout, 10_000)
    const connectionTimeout = yield* read(names.connectionTimeout, Math.max(20_000, headTimeout))
    if (connectionTimeout < headTimeout) {
      return yield* new InvalidOptions({
        field: names.connectionTimeout,
        message: `${names.connectionTimeout} (${connectionTimeout}) is shorter than ${names.headTimeout} (${headTimeout})`
      })
    }
    const maxConnections = connectionCap(fileLimit, yield* read(names.maxConnections, MAX_CONNECTIONS))
    return { headTimeout, connectionTimeout, maxConnections }
  })

const REASONS: Readonly<Record<number, string>> = {
  200: "OK",
  400: "Bad Request",
  404: "Not Found",
  405: "Method Not Allowed",
  408: "Request Timeout",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  503: "Service Unavailable"
}

/** The answer to one request. */
export interface Answer {
  readonly status: 200 | 503
  readonly body: string
  /** Default `text/plain; charset=utf-8`. */
  readonly contentType?: string | undefined
}

/**
 * What an endpoint serves: for a path it routes, the effect computing its
 * answer (run in the supervisor's own runtime, so a supervisor whose fibers
 * do not run does not answer); `undefined` for a 404.
 */
export type Routes = (path: string) => Effect.Effect<Answer> | undefined

/** The URL of `path` on a server: `http://127.0.0.1:9464/metrics`, `http://[::1]:9464/metrics`. */
export const urlOf = (address: Net.AddressInfo, path: string): string =>
  `http://${address.family === "IPv6" ? `[${address.address}]` : address.address}:${address.port}${path}`

/** Writes one response and closes the connection once it is sent. */
const respond = (
  socket: Net.Socket,
  status: number,
  body: string,
  options: { readonly contentType?: string | undefined; readonly head?: boolean; readonly allow?: string } = {}
): void => {
  if (socket.destroyed) return
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
const answer = (socket: Net.Socket, head: string, routes: Routes, notFound: string, run: Runner): void => {
  const lineEnd = head.indexOf("\r\n")
  const requestLine = /^([A-Z]+) (\S+) HTTP\/1\.[01]$/.exec(lineEnd === -1 ? head : head.slice(0, lineEnd))
  if (requestLine === null) return respond(socket, 400, "Bad request\n")
  const [, method, target] = requestLine
  const route = routes(target!.split("?")[0]!)
  if (route === undefined) return respond(socket, 404, notFound)
  if (method !== "GET" && method !== "HEAD") return respond(socket, 405, "Method not allowed\n", { allow: "GET, HEAD" })
  run(route, (a) => respond(socket, a.status, a.body, { contentType: a.contentType, head: method === "HEAD" }))
}

type Runner = (effect: Effect.Effect<Answer>, done: (answer: Answer) => void) => void

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
  (answerHead: (socket: Net.Socket, head: string) => void, connections: Map<Net.Socket, Connection>, limits: Limits) =>
  (socket: Net.Socket) => {
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
      else answerHead(socket, head.slice(0, end))
      head = ""
    })
    // The answer is sent: the client has a moment to read it and close its side, no more.
    socket.on("finish", () => closeAtDeadline(LINGER_MS))
    // A connection that fails concerns its client only: never the supervisor.
    socket.on("error", () => socket.destroy())
    socket.on("close", () => {
      clearTimeout(timer)
      if (connections.get(socket) === state) connections.delete(socket)
    })
  }

/** What {@link serve} needs besides the address. */
export interface ServeOptions {
  /** The address as the user wrote it, for the error. */
  readonly given: string
  /** What the error message starts with: the flag or option, such as `--metrics`. */
  readonly label: string
  readonly limits: Limits
  readonly routes: Routes
  /** The body of a 404. */
  readonly notFound: string
}

/**
 * Listens on `address` for the life of the scope and returns the address it
 * listens on (with the real port when `address.port` is 0). An address that
 * cannot be bound is a `BindFailed`. Closing the scope closes the server and
 * every connection.
 */
export const serve = (
  address: { readonly host?: string | undefined; readonly port: number },
  options: ServeOptions
): Effect.Effect<Net.AddressInfo, BindFailed, Scope.Scope> =>
  Effect.map(
    Effect.acquireRelease(
      Effect.gen(function* () {
        const context = yield* Effect.context<never>()
        const run: Runner = (effect, done) => {
          const fiber = Effect.runForkWith(context)(effect)
          fiber.addObserver((exit) =>
            done(exit._tag === "Success" ? exit.value : { status: 503, body: "Unavailable: the check failed\n" })
          )
        }
        const sockets = new Map<Net.Socket, Connection>()
        const server = Net.createServer(
          connection(
            (socket, head) => answer(socket, head, options.routes, options.notFound, run),
            sockets,
            options.limits
          )
        )
        yield* Effect.callback<void, BindFailed>((resume) => {
          const failed = (error: NodeJS.ErrnoException) =>
            resume(
              Effect.fail(
                new BindFailed({
                  address: options.given,
                  ...(error.code === undefined ? {} : { code: error.code }),
                  message: `${options.label}: cannot listen on ${options.given}: ${error.code ?? error.message}`
                })
              )
            )
          server.once("error", failed)
          server.listen(
            { host: address.host, port: address.port, exclusive: true, backlog: backlogOf(options.limits) },
            () => {
              server.off("error", failed)
              resume(Effect.void)
            }
          )
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
    ({ server }) => server.address() as Net.AddressInfo
  )
