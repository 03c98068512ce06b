/**
 * An Effect HTTP server (`effect/http`, on `@effect/platform-node`'s
 * `NodeHttpServer`) as a supervised worker, in one layer: it serves the
 * socket its supervisor hands it (`--listen`, `Supervisor.Options.listen`:
 * fd 3, 4, … with `LISTEN_FDS`, read by `Worker.sockets`), or, outside a
 * supervisor, a port of its own. No fd number in user code.
 *
 * - **Readiness**: once the server listens it tells the supervisor it is
 *   ready (`Worker.ready`), so a reload (`ready: "message"`,
 *   `--ready message`) replaces a worker only once its successor serves.
 *   Requests that arrive between the listen and the moment `HttpServer.serve`
 *   installs the app are held and handed to it, never dropped.
 * - **Drain**: on interruption (SIGTERM under `NodeRuntime.runMain`, which a
 *   supervisor sends to stop a worker) `NodeHttpServer` closes the server:
 *   it stops accepting (the supervisor's socket stays open and its other
 *   workers take the new connections), closes the idle keep-alive
 *   connections, lets the requests in flight finish, then the process exits,
 *   within `gracefulShutdownTimeout` (default 20 s: keep it below the
 *   supervisor's stop timeout). Checked in `test/node/http-worker.test.ts`.
 *
 * This module is the `effect-prefork/http` entry point's: it imports
 * `@effect/platform-node` (an optional peer dependency), which the other
 * entry points never load.
 *
 * @example
 * ```ts
 * import { NodeRuntime } from "@effect/platform-node"
 * import { Effect, Layer } from "effect"
 * import { HttpServer, HttpServerResponse } from "effect/http"
 * import { HttpWorker } from "effect-prefork/http"
 *
 * const app = Effect.succeed(HttpServerResponse.text(`hello from ${process.pid}\n`))
 *
 * // prefork -n 4 --listen 8080 --ready message -- node server.ts; alone: node server.ts serves port 3000.
 * HttpServer.serve(app).pipe(Layer.provide(HttpWorker.layer({ port: 3000 })), Layer.launch, NodeRuntime.runMain)
 * ```
 *
 * @since 0.1.0
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Worker from "../Worker.ts"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Outside a supervisor (no `LISTEN_FDS` for this process): the port to listen on. Default 3000. */
  readonly port?: number | undefined
  /** Outside a supervisor: the host to listen on. Default: every interface. */
  readonly host?: string | undefined
  /**
   * Which of the supervisor's sockets to serve, by its name (`LISTEN_FDNAMES`:
   * `127.0.0.1_8080`, or the `name` given in `listen`). Default: the first.
   */
  readonly socket?: string | undefined
  /** How long the drain may take before the server is left behind. Default 20 seconds. */
  readonly gracefulShutdownTimeout?: Duration.Input | undefined
  /** The Node server to serve with (its timeouts, TLS with `node:https`). Default `http.createServer()`. */
  readonly server?: (() => Server) | undefined
}

/**
 * Where the worker listens: `{ fd }` of the supervisor's socket, or the
 * fallback port; or a message saying why neither (a `socket` name the
 * supervisor does not hand this worker).
 *
 * @since 0.1.0
 * @category utils
 */
export const listenOptions = (
  sockets: ReadonlyArray<Worker.InheritedSocket>,
  options: Options = {}
): { readonly fd: number } | { readonly port: number; readonly host?: string } | { readonly error: string } => {
  if (sockets.length === 0) {
    return options.host === undefined
      ? { port: options.port ?? 3000 }
      : { port: options.port ?? 3000, host: options.host }
  }
  const chosen = options.socket === undefined ? sockets[0] : sockets.find((s) => s.name === options.socket)
  return chosen === undefined
    ? { error: `no inherited socket named ${options.socket} (there are: ${sockets.map((s) => s.name).join(", ")})` }
    : { fd: chosen.fd }
}

/**
 * Makes `close` drain: Node's `http.Server#close` destroys every idle
 * keep-alive connection at once, racing a request its client may be sending
 * on it at that moment (the client gets ECONNRESET). Here `close` only stops
 * accepting; each request answered from then on says `Connection: close`, so
 * its client does not reuse the connection; a connection that stays quiet is
 * closed by Node's `keepAliveTimeout`, or by the worker's drain (the
 * supervisor's preload closes quiet ones after 500 ms). `close`'s callback
 * comes once every connection has ended.
 */
const drainOnClose = (server: Server): Server => {
  let closing = false
  server.closeIdleConnections = () => {
    closing = true
  }
  server.prependListener("request", (_req: IncomingMessage, res: ServerResponse) => {
    if (closing && !res.headersSent) res.shouldKeepAlive = false
  })
  return server
}

/**
 * Holds the requests a server gets before its app is installed (a request
 * nobody listens for would never be answered) and hands them to the first
 * `request` listener added once the server listens: the app's.
 */
const holdEarlyRequests = (server: Server): Server => {
  const held: Array<readonly [IncomingMessage, ServerResponse]> = []
  const hold = (req: IncomingMessage, res: ServerResponse) => void held.push([req, res])
  const onListener = (event: string | symbol, listener: (...args: Array<unknown>) => void) => {
    // The app's comes once the server listens; one added before (the supervisor's drain, in its preload) is not it.
    if (event !== "request" || listener === hold || !server.listening) return
    server.off("request", hold)
    server.off("newListener", onListener)
    // After the listener is added (newListener comes before): in the order they came.
    process.nextTick(() => {
      for (const [req, res] of held.splice(0)) listener(req, res)
    })
  }
  server.on("request", hold)
  server.on("newListener", onListener)
  return server
}

/**
 * The `HttpServer` (with Node's HTTP platform services) for an Effect HTTP
 * worker: provide it to `HttpServer.serve(app)`. It listens on the socket the
 * supervisor hands this process (or `options.port` outside a supervisor),
 * then sends `Worker.ready`; closing it drains (see the module's note).
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: Options = {}
): Layer.Layer<
  Layer.Success<ReturnType<typeof NodeHttpServer.layer>>,
  Layer.Error<ReturnType<typeof NodeHttpServer.layer>>
> =>
  Layer.unwrap(
    Effect.gen(function* () {
      const where = listenOptions(yield* Worker.sockets, options)
      if ("error" in where) return yield* Effect.die(new Error(`HttpWorker.layer: ${where.error}`))
      return NodeHttpServer.layer(() => holdEarlyRequests(drainOnClose((options.server ?? createServer)())), {
        ...where,
        ...(options.gracefulShutdownTimeout === undefined
          ? {}
          : { gracefulShutdownTimeout: options.gracefulShutdownTimeout })
      }).pipe(
        // Built once the server listens: then this worker is ready.
        Layer.tap(() => Worker.ready)
      )
    })
  )
