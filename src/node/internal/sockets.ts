/**
 * Listening sockets the supervisor owns, on Node: bound in the supervisor's
 * process, never polled by it, handed to every worker as a descriptor.
 *
 * Node has no public way to hold a listening socket without accepting on it:
 * a `net.Server` that listens also accepts, and would take connections meant
 * for the workers. So the supervisor does what node:cluster's `SCHED_NONE`
 * mode does: it creates the socket and binds it (`net._createServerHandle`,
 * which binds and does not listen), and a short-lived helper process, given
 * the descriptor, calls `listen(2)` on it and exits before its event loop
 * ever polls. From then on the kernel queues connections in the backlog,
 * whether or not any worker is alive, until the supervision ends: the
 * supervisor closes its copy as it tells its workers to stop, and each worker
 * closes its own as it stops accepting.
 *
 * A socket inherited by this process (`fd:3`, systemd socket activation) is
 * taken as it is: it is already listening.
 *
 * Every socket is then handed over blocking, as systemd does. A Unix socket
 * gets its mode from birth (bound under a umask), goes only in a directory no
 * one else can rename entries in, and replaces only a stale socket of ours.
 */
import { spawn } from "node:child_process"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Path from "node:path"
import { getSystemErrorName } from "node:util"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { BindFailed } from "../../Errors.ts"
import * as Listen from "../../Listen.ts"
import * as Trust from "./trust.ts"

/** What `net._createServerHandle` returns: a libuv TCP or Pipe handle, or a negative errno. */
interface ServerHandle {
  readonly fd: number
  getsockname?: (out: Record<string, unknown>) => number
  setPendingInstances?: (n: number) => void
  close: (callback?: () => void) => void
}

type CreateServerHandle = (
  address: string | null,
  port: number,
  addressType: number,
  fd: number | undefined,
  flags: number
) => ServerHandle | number

/** Node's `net` keeps this for cluster; it is the one way to bind without listening. */
const createServerHandle = (Net as unknown as { _createServerHandle: CreateServerHandle })._createServerHandle

/** libuv's UV_TCP_IPV6ONLY. */
const TCP_IPV6ONLY = 1

const errnoName = (errno: number): string => {
  try {
    return getSystemErrorName(errno)
  } catch {
    return `errno ${errno}`
  }
}

/** "permission denied (EACCES)": the system's words and the code. */
const describeErrno = (errno: number): string => {
  const name = errnoName(errno)
  const words: Record<string, string> = {
    EACCES: "permission denied (a port below 1024 needs root or CAP_NET_BIND_SERVICE)",
    EADDRINUSE: "address already in use",
    EADDRNOTAVAIL: "this machine has no such address",
    EAFNOSUPPORT: "address family not supported"
  }
  return words[name] === undefined ? name : `${words[name]} (${name})`
}

const bindFailed = (spec: Listen.Spec, code: string | undefined, what: string) =>
  new BindFailed({
    address: Listen.formatSpec(spec),
    ...(code === undefined ? {} : { code }),
    message: `cannot listen on ${Listen.formatSpec(spec)}: ${what}`
  })

const errorCode = (error: unknown): string | undefined =>
  typeof error === "object" && error !== null && "code" in error && typeof error.code === "string"
    ? error.code
    : undefined

/** A host name becomes the first address the resolver gives; an IP address stays as it is. */
const resolveHost = (spec: Extract<Listen.Spec, { _tag: "Tcp" }>) =>
  Effect.callback<{ readonly address: string; readonly family: 4 | 6 }, BindFailed>((resume) => {
    const host = spec.host
    if (host === undefined) return resume(Effect.succeed({ address: "::", family: 6 }))
    const family = Net.isIP(host)
    if (family !== 0) return resume(Effect.succeed({ address: host, family: family as 4 | 6 }))
    // node:dns only for a name: most addresses are numbers, and every start would pay for loading it.
    void import("node:dns").then((Dns) =>
      Dns.lookup(host, (error, address, family) => {
        if (error !== null) resume(Effect.fail(bindFailed(spec, errorCode(error), `cannot resolve ${host}`)))
        else resume(Effect.succeed({ address, family: family as 4 | 6 }))
      })
    )
  })

const euid = (): number => process.geteuid?.() ?? -1

const lstatOrUndefined = (path: string): Fs.Stats | undefined => {
  try {
    return Fs.lstatSync(path)
  } catch {
    return undefined
  }
}

/**
 * The directory a Unix socket goes in, and each above it, must be one that no
 * one but us (or root, or the workers' user) can rename entries in: owned by
 * one of them, and not writable by group or others unless sticky (`/tmp`).
 * Otherwise another user could swap the socket file for one of their own.
 */
const checkParents = (spec: Extract<Listen.Spec, { _tag: "Unix" }>) =>
  Effect.suspend(() => {
    const trusted = [euid(), ...(spec.owner?.uid === undefined ? [] : [spec.owner.uid])]
    const verdict = Trust.directory(Path.dirname(spec.path), trusted)
    if (verdict._tag === "Trusted") return Effect.void
    if (verdict._tag === "Missing") {
      return Effect.fail(bindFailed(spec, verdict.code, `its directory ${Path.dirname(spec.path)} is missing`))
    }
    return Effect.fail(
      bindFailed(
        spec,
        "EPERM",
        `${verdict.at}: ${verdict.reason}, so another user could replace the socket: use a directory of your own`
      )
    )
  })

/**
 * What is at a Unix socket's path before it is bound: nothing is fine; a stale
 * socket of ours (nothing accepts on it) is removed; anything else (another
 * user's socket, a symbolic link, a file, a live socket) is refused and left
 * exactly as it is.
 */
const clearUnixPath = (spec: Extract<Listen.Spec, { _tag: "Unix" }>) =>
  Effect.callback<void, BindFailed>((resume) => {
    let stat: Fs.Stats
    try {
      stat = Fs.lstatSync(spec.path)
    } catch {
      return resume(Effect.void)
    }
    if (stat.isSymbolicLink()) {
      return resume(Effect.fail(bindFailed(spec, "EEXIST", `${spec.path} is a symbolic link: remove it yourself`)))
    }
    if (!stat.isSocket()) {
      return resume(Effect.fail(bindFailed(spec, "EEXIST", `${spec.path} exists and is not a socket`)))
    }
    if (stat.uid !== euid()) {
      return resume(
        Effect.fail(
          bindFailed(spec, "EEXIST", `${spec.path} is a socket of uid ${stat.uid}, not ours: remove it yourself`)
        )
      )
    }
    const probe = Net.connect(spec.path)
    probe.once("connect", () => {
      probe.destroy()
      resume(Effect.fail(bindFailed(spec, "EADDRINUSE", `another process listens on ${spec.path}`)))
    })
    probe.once("error", (error) => {
      if (errorCode(error) !== "ECONNREFUSED") {
        return resume(Effect.fail(bindFailed(spec, errorCode(error), error.message)))
      }
      try {
        Fs.unlinkSync(spec.path)
        resume(Effect.void)
      } catch (unlinkError) {
        resume(Effect.fail(bindFailed(spec, errorCode(unlinkError), String(unlinkError))))
      }
    })
  })

/**
 * Binds a Unix socket with its mode from birth: under a umask that leaves
 * exactly `mode`, set around the synchronous `bind(2)` and restored right
 * after (never a `chmod` afterwards, which would leave a window). Then, for
 * workers run as another user, the file (which we just created) is given to
 * that user with `lchown`.
 */
const bindUnix = (spec: Extract<Listen.Spec, { _tag: "Unix" }>) =>
  Effect.gen(function* () {
    yield* checkParents(spec)
    yield* clearUnixPath(spec)
    const mode = spec.mode ?? Listen.DEFAULT_UNIX_MODE
    // process.umask is process-wide: for the length of one bind, a file another thread creates gets fewer permissions, never more.
    const previous = process.umask(~mode & 0o777)
    let handle: ServerHandle | number
    try {
      handle = createServerHandle(spec.path, -1, -1, undefined, 0)
    } finally {
      process.umask(previous)
    }
    if (typeof handle === "number") return yield* bindFailed(spec, errnoName(handle), describeErrno(handle))
    const bound = handle
    const stat = lstatOrUndefined(spec.path)
    if (stat === undefined || !stat.isSocket() || stat.uid !== euid()) {
      bound.close()
      return yield* bindFailed(spec, "EEXIST", `${spec.path} was replaced while it was bound`)
    }
    if (spec.owner !== undefined) {
      const { uid, gid } = spec.owner
      yield* Effect.try({
        try: () => Fs.lchownSync(spec.path, uid ?? -1, gid ?? -1),
        catch: (error) => {
          bound.close()
          return bindFailed(spec, errorCode(error), `cannot give it to the workers' user: ${String(error)}`)
        }
      })
    }
    return { handle: bound, ino: stat.ino }
  })

interface Bound {
  readonly socket: Listen.Socket
  readonly backlog: number
  /** Holds the descriptor; closed with the scope. */
  readonly handle: ServerHandle
  /** Bound here (to be made to listen, and a Unix socket's file removed at the end), or inherited. */
  readonly owned: boolean
  /** A Unix socket file we created: its inode, so that only that file is removed at the end. */
  readonly ino?: number | undefined
}

const tcpAddress = (handle: ServerHandle, fallback: { host: string; port: number }): Listen.Address => {
  const out: Record<string, unknown> = {}
  handle.getsockname?.(out)
  return {
    _tag: "Tcp",
    host: typeof out["address"] === "string" ? out["address"] : fallback.host,
    port: typeof out["port"] === "number" ? out["port"] : fallback.port,
    family: out["family"] === "IPv4" ? "IPv4" : "IPv6"
  }
}

/** Binds one address without listening, or takes an inherited socket over. */
const bindOne = (spec: Listen.Spec): Effect.Effect<Bound, BindFailed> =>
  Effect.gen(function* () {
    if (spec._tag === "Inherited") {
      const isSocket = yield* Effect.try({
        try: () => Fs.fstatSync(spec.fd).isSocket(),
        catch: (error) => bindFailed(spec, errorCode(error), error instanceof Error ? error.message : String(error))
      })
      if (!isSocket) return yield* bindFailed(spec, "ENOTSOCK", `fd ${spec.fd} is not a socket`)
      const handle = createServerHandle(null, 0, 0, spec.fd, 0)
      if (typeof handle === "number") return yield* bindFailed(spec, errnoName(handle), errnoName(handle))
      const address: Listen.Address =
        handle.getsockname === undefined
          ? { _tag: "Unix", path: `fd:${spec.fd}` }
          : tcpAddress(handle, { host: "", port: 0 })
      return {
        socket: { fd: spec.fd, name: spec.name ?? Listen.defaultName(address), address },
        backlog: 0,
        handle,
        owned: false
      }
    }
    if (spec._tag === "Unix") {
      const { handle, ino } = yield* bindUnix(spec)
      const address: Listen.Address = { _tag: "Unix", path: spec.path }
      const socket = { fd: handle.fd, name: spec.name ?? Listen.defaultName(address), address }
      return { socket, backlog: spec.backlog, handle, owned: true, ino }
    }
    const { address: host, family } = yield* resolveHost(spec)
    let handle = createServerHandle(host, spec.port, family, undefined, spec.ipv6Only ? TCP_IPV6ONLY : 0)
    // Every interface: IPv6 and IPv4 where the system allows; IPv4 alone where IPv6 is off.
    if (typeof handle === "number" && spec.host === undefined)
      handle = createServerHandle("0.0.0.0", spec.port, 4, undefined, 0)
    if (typeof handle === "number") return yield* bindFailed(spec, errnoName(handle), describeErrno(handle))
    // libuv defers a bind's EADDRINUSE to the listen (its `delayed_error`): an unbound socket has no port yet.
    const out: Record<string, unknown> = {}
    const err = handle.getsockname?.(out) ?? 0
    if (err !== 0 || typeof out["port"] !== "number" || out["port"] === 0) {
      handle.close()
      return yield* bindFailed(spec, "EADDRINUSE", "address already in use (EADDRINUSE)")
    }
    const address = tcpAddress(handle, { host, port: spec.port })
    return {
      socket: { fd: handle.fd, name: spec.name ?? Listen.defaultName(address), address },
      backlog: spec.backlog,
      handle,
      owned: true
    }
  })

/**
 * The helper's program: `listen(2)` on each descriptor (3, 4, …) with its
 * backlog, then exit at once, before the event loop polls: every
 * `'listening'` or `'error'` of a descriptor given by number comes on
 * `process.nextTick`. It reports each result as one JSON line.
 */
const LISTEN_PROGRAM = `
const net = require("node:net")
const backlogs = JSON.parse(process.argv[1])
const results = []
let pending = backlogs.length
const done = (i, error) => {
  results[i] = error === undefined ? null : (error.code || error.message)
  if (--pending === 0) {
    require("node:fs").writeSync(1, JSON.stringify(results) + "\\n")
    process.exit(0)
  }
}
backlogs.forEach((backlog, i) => {
  const server = net.createServer()
  server.once("listening", () => done(i))
  server.once("error", (error) => done(i, error))
  server.listen({ fd: 3 + i, backlog })
})
`

/** Runs the helper over the bound sockets; says which failed to listen, and why. */
const listenAll = (bound: ReadonlyArray<Bound>): Effect.Effect<ReadonlyArray<string | null>, BindFailed> =>
  Effect.callback<ReadonlyArray<string | null>, BindFailed>((resume) => {
    const fail = (message: string) =>
      resume(
        Effect.fail(new BindFailed({ address: bound.map((b) => Listen.format(b.socket.address)).join(", "), message }))
      )
    let output = ""
    const child = spawn(process.execPath, ["-e", LISTEN_PROGRAM, JSON.stringify(bound.map((b) => b.backlog))], {
      stdio: ["ignore", "pipe", "inherit", ...bound.map((b) => b.socket.fd)],
      windowsHide: true
    })
    child.once("error", (error) => fail(`cannot start the listen helper: ${error.message}`))
    child.stdout!.setEncoding("utf8")
    child.stdout!.on("data", (chunk: string) => {
      output += chunk
    })
    child.once("close", (code) => {
      try {
        const results = JSON.parse(output) as Array<string | null>
        if (code === 0 && Array.isArray(results) && results.length === bound.length)
          return resume(Effect.succeed(results))
      } catch {
        // reported below
      }
      fail(`the listen helper failed (exit ${code}): ${output.trim()}`)
    })
  })

/**
 * Clears `O_NONBLOCK` on the sockets, for every process that holds them: the
 * flag lives on the open file description, which libuv set when it created
 * (or took over) the socket. systemd hands sockets over blocking
 * (`NonBlocking=false`), and a program written for it (Python's
 * `socket.socket(fileno=3)` then `accept()`, a C accept loop) fails with
 * `EAGAIN` on a non-blocking one. libuv clears the flag on descriptors 0–2 of
 * a child it spawns: a child given up to three sockets as its stdio, which
 * does nothing, clears it. (A Node worker sets it again when it serves the
 * socket; that is what Node expects.) Best effort: a failure is logged.
 */
const makeBlocking = (fds: ReadonlyArray<number>): Effect.Effect<void> =>
  Effect.forEach(
    Array.from({ length: Math.ceil(fds.length / 3) }, (_, i) => fds.slice(3 * i, 3 * i + 3)),
    (group) =>
      Effect.callback<string | undefined>((resume) => {
        let child: ReturnType<typeof spawn>
        try {
          child = spawn("/bin/sh", ["-c", ":"], {
            stdio: [group[0]!, group[1] ?? "ignore", group[2] ?? "ignore"],
            windowsHide: true
          })
        } catch (error) {
          return resume(Effect.succeed(String(error)))
        }
        child.once("error", (error) => resume(Effect.succeed(error.message)))
        child.once("exit", (code) => resume(Effect.succeed(code === 0 ? undefined : `exit ${code}`)))
      }).pipe(
        Effect.flatMap((failure) =>
          failure === undefined
            ? Effect.void
            : Effect.logWarning(
                `the listening sockets stay non-blocking (${failure}): a worker doing a blocking accept() on them may fail with EAGAIN`
              )
        )
      ),
    { discard: true }
  )

const closeOne = (bound: Bound): Effect.Effect<void> =>
  Effect.sync(() => {
    bound.handle.close()
    if (bound.owned && bound.socket.address._tag === "Unix") {
      // Only the file we created: still a socket of ours, the same inode.
      const path = bound.socket.address.path
      const stat = lstatOrUndefined(path)
      if (stat === undefined || !stat.isSocket() || stat.ino !== bound.ino) return
      try {
        Fs.unlinkSync(path)
      } catch {
        // already gone
      }
    }
  })

/**
 * Binds every address and makes each listen, or fails with the first
 * `BindFailed`, having closed everything it bound. When the scope closes, the
 * sockets are closed and Unix socket files removed.
 *
 * @internal
 */
export const listen = (
  specs: ReadonlyArray<Listen.Spec>
): Effect.Effect<ReadonlyArray<Listen.Socket>, BindFailed, Scope.Scope> =>
  Effect.gen(function* () {
    if (specs.length === 0) return []
    const bound: Array<Bound> = []
    yield* Effect.addFinalizer(() => Effect.forEach(bound, closeOne, { discard: true }))
    for (const spec of specs) bound.push(yield* bindOne(spec))
    const own = bound.filter((b) => b.owned)
    if (own.length > 0) {
      const results = yield* listenAll(own)
      for (const [i, result] of results.entries()) {
        if (result === null) continue
        const b = own[i]!
        return yield* new BindFailed({
          address: Listen.format(b.socket.address),
          code: result,
          message: `cannot listen on ${Listen.format(b.socket.address)}: ${result}`
        })
      }
    }
    // Every socket, owned or inherited, is handed over blocking, as systemd does.
    yield* makeBlocking(bound.map((b) => b.socket.fd))
    return bound.map((b) => b.socket)
  })
