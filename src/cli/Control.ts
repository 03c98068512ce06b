/**
 * Control from another terminal, as `pm2 status`, `supervisorctl` and
 * `einhornsh` offer: `prefork` listens on a Unix socket that only its user
 * may use, and `prefork ctl` talks to it.
 *
 * - The socket is `<name>.sock` (see `Names.ts`) in `$XDG_RUNTIME_DIR/prefork`
 *   when that variable is set, else in `prefork-<euid>` in `$TMPDIR` or
 *   `/tmp`; `--control <path>` chooses another, `--control off` none. Its directory
 *   is made private (mode 0700) by prefork or refused, and a directory given
 *   with `--control` is never created or changed (see `RuntimeDir.ts`). The
 *   socket is bound under umask 177, so it is mode 0600 from birth, and
 *   removed when prefork exits.
 * - A stale socket file of ours (nothing answers on it) is replaced. One that
 *   a running prefork answers on is left to it (the default name then moves
 *   on to `name-2`, …); anything else there (another user's socket, a file, a
 *   link) is refused.
 * - The protocol is in `ControlProtocol.ts`. Each connection has budgets
 *   ({@link Limits}): one request in flight (the connection is not read
 *   while it is answered), a line of at most 4 KiB that must arrive whole
 *   within 5 s of its first byte, 30 s of silence at most, 10 s to take an
 *   answer; at most 16 connections, the 17th making room by closing the one
 *   idle longest, or refused if all are busy. A client that breaks a budget
 *   is answered an error line and closed; nobody else notices.
 *
 * @since 0.1.0
 */
import { lstatSync, unlinkSync } from "node:fs"
import * as Net from "node:net"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import type * as Scope from "effect/Scope"
import type { SupervisorHandle } from "../Supervisor.ts"
import * as Client from "./ControlClient.ts"
import * as Protocol from "./ControlProtocol.ts"
import * as Names from "./Names.ts"
import * as Reload from "./Reload.ts"
import * as RuntimeDir from "./RuntimeDir.ts"

/**
 * Where `prefork` listens and `prefork ctl` connects unless told otherwise,
 * as help texts say it: `<name>` stands for the prefork's name.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultPath = (env?: NodeJS.ProcessEnv): string => Names.socketIn(RuntimeDir.defaultDir(env).dir, "<name>")

/**
 * The budgets of the control socket.
 *
 * @since 0.1.0
 * @category models
 */
export interface Limits {
  /** Connections at once (default 16). */
  readonly maxConnections: number
  /** Bytes in a request line (default 4096). */
  readonly maxLine: number
  /** From the first byte of a request to its newline, in ms (default 5,000). */
  readonly requestTimeout: number
  /** A connection with nothing to answer and nothing arriving, in ms (default 30,000). */
  readonly idleTimeout: number
  /** For the client to take an answer, in ms (default 10,000). */
  readonly replyTimeout: number
}

/**
 * @since 0.1.0
 * @category constants
 */
export const defaultLimits: Limits = {
  maxConnections: 16,
  maxLine: Protocol.MAX_LINE,
  requestTimeout: 5_000,
  idleTimeout: 30_000,
  replyTimeout: 10_000
}

/**
 * Why the control socket cannot be served: its path is not trusted, another
 * prefork answers there, or it cannot be bound.
 *
 * @since 0.1.0
 * @category errors
 */
export class ControlError extends Data.TaggedError("ControlError")<{
  readonly path: string
  readonly reason: string
}> {
  override get message(): string {
    return this.reason
  }
}

/** What answers on a socket path: a live prefork (or something listening), nothing (stale), or nothing there. */
type Probe = "live" | "stale"

/** Connects once and says what answers: a connection made, or a full backlog, is live; a refusal is stale. */
const probe = (path: string): Effect.Effect<Probe> =>
  Effect.callback<Probe>((resume) => {
    const socket = Net.connect(path)
    socket.once("connect", () => {
      socket.destroy()
      resume(Effect.succeed("live"))
    })
    socket.once("error", (error: NodeJS.ErrnoException) =>
      resume(Effect.succeed(error.code === "EAGAIN" ? "live" : "stale"))
    )
  })

/**
 * A socket found refusing connections is asked again this much later before
 * it is removed: another prefork may be between its bind(2) and its
 * listen(2), which refuse for that moment.
 */
const STALE_RECHECK = 50

/** The inode at `path`, or undefined. */
const inode = (path: string): number | undefined => {
  try {
    return lstatSync(path).ino
  } catch {
    return undefined
  }
}

/** How long a client told to go has to take the error line before it is cut. */
const CLOSE_GRACE = 1_000

/** Sends a last error line and closes: at once when it is sent, after {@link CLOSE_GRACE} at most. */
const sendAndClose = (socket: Net.Socket, error: string): void => {
  if (socket.destroyed) return
  socket.end(`${JSON.stringify(Protocol.failure(error))}\n`, () => socket.destroy())
  setTimeout(() => socket.destroy(), CLOSE_GRACE).unref()
}

/** One client: reads a line, answers it, reads on. */
class Connection {
  readonly lines: Protocol.Lines
  /** A request is being answered, or the client is being closed: nothing is read meanwhile. */
  busy = false
  /** When it last had something to do, for choosing whom to close when full. */
  lastActive = performance.now()
  /** The budget being timed, if any. */
  private deadline:
    | { readonly kind: "request" | "idle" | "reply"; readonly timer: ReturnType<typeof setTimeout> }
    | undefined
  /** The client has sent everything (half-close): answer what was read, then end. */
  private ended = false

  readonly socket: Net.Socket
  private readonly limits: Limits
  private readonly respond: (line: string, reply: (body: Protocol.Reply) => void) => void

  constructor(
    socket: Net.Socket,
    limits: Limits,
    respond: (line: string, reply: (body: Protocol.Reply) => void) => void
  ) {
    this.socket = socket
    this.limits = limits
    this.respond = respond
    this.lines = new Protocol.Lines(limits.maxLine)
    socket.on("error", () => {})
    socket.on("data", (chunk: Buffer) => {
      this.lastActive = performance.now()
      this.lines.push(chunk)
      this.pump()
    })
    socket.on("end", () => {
      this.ended = true
      this.pump()
    })
    socket.once("close", () => this.disarm())
    this.pump()
  }

  private disarm() {
    if (this.deadline !== undefined) clearTimeout(this.deadline.timer)
    this.deadline = undefined
  }

  private arm(kind: "request" | "idle" | "reply", millis: number, onTimeout: () => void) {
    this.disarm()
    this.deadline = { kind, timer: setTimeout(onTimeout, millis) }
  }

  /** Answers an error line and closes: the client has broken a budget. */
  refuse(error: string) {
    this.disarm()
    this.busy = true
    this.socket.pause()
    sendAndClose(this.socket, error)
  }

  /** Takes the next whole line and answers it, or waits for one (within its budget). */
  private pump() {
    if (this.busy || this.socket.destroyed) return
    const line = this.lines.next()
    if (line instanceof Protocol.LineTooLong) return this.refuse(line.message)
    if (line !== undefined) {
      this.disarm()
      this.busy = true
      this.socket.pause()
      return this.respond(line, (body) => this.write(body))
    }
    if (this.ended) {
      if (this.lines.pending > 0) return this.refuse("incomplete request at end of input")
      this.disarm()
      return void this.socket.end()
    }
    if (this.lines.pending === 0) {
      this.arm("idle", this.limits.idleTimeout, () => this.refuse(`idle for ${this.limits.idleTimeout} ms: closed`))
    } else if (this.deadline?.kind !== "request") {
      // A request begun has an absolute deadline, not pushed back by each byte that trickles in.
      this.arm("request", this.limits.requestTimeout, () =>
        this.refuse(`request not complete within ${this.limits.requestTimeout} ms`)
      )
    }
  }

  /** Writes an answer; the next request is read once the client has taken it. */
  private write(body: Protocol.Reply) {
    if (this.socket.destroyed) return
    const next = () => {
      this.disarm()
      this.busy = false
      this.lastActive = performance.now()
      if (!this.ended) this.socket.resume()
      // Pipelined lines already read: the next one after a turn of the event loop.
      setImmediate(() => this.pump())
    }
    if (this.socket.write(`${JSON.stringify(body)}\n`)) return next()
    this.arm("reply", this.limits.replyTimeout, () => this.socket.destroy())
    this.socket.once("drain", next)
  }
}

/**
 * Where the control socket goes: a path (`--control`), or a name, whose
 * socket is `<name>.sock` in the user's private runtime directory
 * (`Names.socketPath`). A name that is not `explicit` (the default one) moves
 * on to `name-2`, `name-3`, … while a live prefork holds it.
 *
 * @since 0.1.0
 * @category models
 */
export type Where = { readonly path: string } | { readonly name: string; readonly explicit: boolean }

/**
 * How the control socket is served.
 *
 * @since 0.1.0
 * @category models
 */
export interface ServeOptions {
  readonly limits?: Partial<Limits> | undefined
  /** The CPU sample of `status`, in milliseconds (default 200). */
  readonly sampleMillis?: number | undefined
  /** The command the workers run, for `info` (`prefork ctl ls`). */
  readonly command?: ReadonlyArray<string> | undefined
  /** What `stop` does (see `ControlProtocol.ResponderOptions`); without it, `stop` is refused. */
  readonly stop?: Effect.Effect<void> | undefined
  /** Where the runtime directory is read from (default: `process.env`). */
  readonly env?: NodeJS.ProcessEnv | undefined
}

/**
 * A control socket bound and listening; requests wait until {@link
 * Listening.serve} gives it the supervisor.
 *
 * @since 0.1.0
 * @category models
 */
export interface Listening {
  /** The socket's path, as given or made from the name. */
  readonly path: string
  /** The name taken, with a `Where` that is a name. */
  readonly name: string | undefined
  /** Default names passed over because a live prefork holds them, with its pid (null if it did not say). */
  readonly passed: ReadonlyArray<{ readonly name: string; readonly pid: number | null }>
  /** Answers requests with this supervisor from now on, those that waited included. */
  readonly serve: (handle: SupervisorHandle) => Effect.Effect<void>
}

/** The pid of the prefork answering at `path`, asked with a short deadline; null if it does not say. */
const holder = (path: string): Effect.Effect<number | null> =>
  Effect.promise(() =>
    Client.ask(path, { cmd: "info" }, 1_000, 64 * 1024).then(
      (reply) => Client.asInfo(reply)?.pid ?? null,
      () => null
    )
  )

/**
 * Binds and listens on the control socket (see {@link Where}) for as long as
 * the scope lasts, or fails with a `ControlError`: an untrusted directory or
 * file, a live prefork at the path or explicit name (its pid said), every
 * default name taken, a bind error. A stale socket of ours is replaced. Two
 * preforks taking one default name at once cannot both bind it: the second
 * bind fails (`EADDRINUSE`) and takes the next name.
 *
 * @since 0.1.0
 * @category constructors
 */
export const listen = (where: Where, options: ServeOptions = {}): Effect.Effect<Listening, ControlError, Scope.Scope> =>
  Effect.gen(function* () {
    const limits: Limits = { ...defaultLimits, ...options.limits }
    const tries =
      "path" in where
        ? [{ name: undefined, path: where.path }]
        : (where.explicit ? [where.name] : Names.candidates(where.name)).map((name) => ({
            name,
            path: Names.socketPath(name, options.env)
          }))
    const responder = yield* Deferred.make<(line: string) => Effect.Effect<Protocol.Reply>>()
    const run = yield* FiberSet.makeRuntime()
    const answer = (line: string, reply: (body: Protocol.Reply) => void) =>
      run(
        Deferred.await(responder).pipe(
          Effect.flatMap((respond) => respond(line)),
          // A defect here is a bug of prefork's: that client gets an error, the supervisor goes on.
          Effect.catchDefect((defect) =>
            Effect.as(Effect.logError("Control request failed", defect), Protocol.failure("internal error"))
          ),
          Effect.flatMap((body) => Effect.sync(() => reply(body)))
        )
      )
    const passed: Array<{ name: string; pid: number | null }> = []
    for (const { name, path } of tries) {
      const refused = (reason: string) => Effect.fail(new ControlError({ path, reason }))
      const real = RuntimeDir.resolve(path, { create: true, env: options.env })
      if (typeof real !== "string") return yield* refused(real.message)
      const existing = RuntimeDir.checkSocket(real)
      if (existing instanceof RuntimeDir.UntrustedPath) return yield* refused(existing.message)
      let live = false
      if (existing === undefined) {
        const seen = inode(real)
        live =
          (yield* probe(real)) === "live" ||
          (yield* Effect.andThen(Effect.sleep(STALE_RECHECK), probe(real))) === "live"
        // Stale: a socket of ours left by a prefork that did not exit cleanly (the same one that refused).
        if (!live && seen !== undefined && inode(real) === seen) {
          try {
            unlinkSync(real)
          } catch {
            // gone meanwhile
          }
        }
      }
      const bound = live ? undefined : yield* bind(real, path, limits, answer)
      if (bound !== undefined) {
        return {
          path,
          name,
          passed,
          serve: (handle) =>
            Effect.gen(function* () {
              // A reload or restart asked here is logged as it starts and ends, as a SIGHUP's is.
              const respond = yield* Protocol.makeResponder(Reload.logged(handle, "prefork ctl"), {
                sampleMillis: options.sampleMillis,
                name,
                command: options.command,
                stop: options.stop
              })
              yield* Deferred.succeed(responder, respond)
            })
        } satisfies Listening
      }
      const pid = yield* holder(real)
      const by = pid === null ? "another prefork" : `prefork pid ${pid}`
      if (name === undefined) return yield* refused(`another prefork answers on ${path}`)
      if ("explicit" in where && where.explicit)
        return yield* refused(`the name ${name} is taken: ${by} answers on ${path}`)
      passed.push({ name, pid })
    }
    return yield* Effect.fail(
      new ControlError({
        path: tries[0]!.path,
        reason: `the names ${tries[0]!.name}, ${tries[1]!.name} … ${tries.at(-1)!.name} are all taken`
      })
    )
  })

/**
 * Listens on `real` for as long as the scope lasts: the server, or undefined
 * when something else bound the path first (`EADDRINUSE`).
 */
const bind = (
  real: string,
  path: string,
  limits: Limits,
  answer: (line: string, reply: (body: Protocol.Reply) => void) => void
): Effect.Effect<Net.Server | undefined, ControlError, Scope.Scope> => {
  const clients = new Set<Connection>()
  const server = Net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (socket) => {
    if (clients.size >= limits.maxConnections) {
      // Room is made by closing whoever has waited longest with nothing to answer; if all are busy, the newcomer goes.
      let idlest: Connection | undefined
      for (const c of clients) if (!c.busy && (idlest === undefined || c.lastActive < idlest.lastActive)) idlest = c
      const full = `too many control connections (${limits.maxConnections})`
      if (idlest === undefined) {
        socket.on("error", () => {})
        return sendAndClose(socket, full)
      }
      clients.delete(idlest)
      idlest.refuse(`${full}: closed, idle longest`)
    }
    const connection = new Connection(socket, limits, answer)
    clients.add(connection)
    socket.once("close", () => clients.delete(connection))
    socket.resume()
  })
  let ours: number | undefined
  return Effect.acquireRelease(
    Effect.callback<Net.Server | undefined, ControlError>((resume) => {
      server.once("error", (error: NodeJS.ErrnoException) =>
        resume(
          error.code === "EADDRINUSE"
            ? Effect.succeed(undefined)
            : Effect.fail(new ControlError({ path, reason: `cannot listen on ${path}: ${error.message}` }))
        )
      )
      server.once("listening", () => {
        ours = inode(real)
        resume(Effect.succeed(server))
      })
      // bind(2) runs synchronously in listen(): under this umask the socket is born 0600, never chmod-ed.
      const umask = process.umask(0o177)
      try {
        server.listen({ path: real, exclusive: true })
      } finally {
        process.umask(umask)
      }
    }),
    (bound) =>
      bound === undefined
        ? Effect.void
        : Effect.callback<void>((resume) => {
            server.close(() => resume(Effect.void))
            // Clients still connected are let go: the socket is closing with prefork.
            for (const client of clients) client.socket.destroy()
            // Only our own socket: a later prefork's at the same path is left alone.
            if (ours !== undefined && inode(real) === ours) {
              try {
                unlinkSync(real)
              } catch {
                // gone already
              }
            }
          })
  )
}

/**
 * Serves the control socket at `path` for `handle` for as long as the scope
 * lasts ({@link listen}, then {@link Listening.serve}); fails with a
 * `ControlError` when it cannot.
 *
 * @since 0.1.0
 * @category constructors
 */
export const serve = (
  handle: SupervisorHandle,
  path: string,
  options: ServeOptions = {}
): Effect.Effect<void, ControlError, Scope.Scope> =>
  Effect.flatMap(listen({ path }, options), (listening) => listening.serve(handle))
