/**
 * The listening sockets a supervisor owns: what to bind (a TCP address, a
 * Unix socket path, or a socket inherited by file descriptor), parsed and
 * checked here without any I/O, and what was bound; and the sockets of
 * socket activation, taken once ({@link activation}).
 *
 * The supervisor binds every address before it starts a worker and holds the
 * sockets until the supervision ends, as Tornado's `bind_sockets` before
 * `fork_processes`: while every worker is down, connections wait in the
 * kernel's backlog instead of being refused. Every worker inherits them as
 * file descriptors 3, 4, … with systemd's socket-activation variables
 * (`LISTEN_FDS`, `LISTEN_FDNAMES`, `LISTEN_PID`), so gunicorn (which reads
 * `LISTEN_FDS` itself, with no `--bind`: `--bind fd://3` as well would take
 * fd 3 twice and fail with EBADF), uvicorn (`--fd 3`) and Node
 * (`server.listen({ fd: 3 })`) serve them unchanged.
 *
 * Addresses as strings:
 * - `"8080"`, `":8080"`: every interface, port 8080 (IPv6 and IPv4 where the system allows);
 * - `"127.0.0.1:8080"`, `"localhost:0"` (port 0: the system picks a free port), `"[::1]:8080"`;
 * - `"unix:/run/app.sock"` or any absolute path `"/run/app.sock"`: a Unix socket,
 *   mode 0660 unless a mode is given: `"unix:/run/app.sock,mode=0666"`;
 * - `"fd:3"`: a socket this process inherited (socket activation).
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import { InvalidOptions } from "./Errors.ts"
import { socketsFromEnv } from "./Worker.ts"

/**
 * One address to listen on, as given by a user.
 *
 * @since 0.1.0
 * @category models
 */
export type Input =
  | string
  | {
      readonly host?: string | undefined
      readonly port: number
      readonly backlog?: number | undefined
      /** Only IPv6, for an IPv6 host such as `"::"` (default: the system's, usually dual-stack). */
      readonly ipv6Only?: boolean | undefined
      /** The name in `LISTEN_FDNAMES` (default: the address). */
      readonly name?: string | undefined
    }
  | {
      readonly path: string
      /**
       * The socket file's permissions, such as `0o666`, set from birth (the
       * socket is bound under a umask that leaves exactly these). Default
       * {@link DEFAULT_UNIX_MODE}, `0o660`: the owner and its group can connect.
       */
      readonly mode?: number | undefined
      readonly backlog?: number | undefined
      readonly name?: string | undefined
    }
  | { readonly fd: number; readonly name?: string | undefined }

/**
 * One address to listen on, checked.
 *
 * @since 0.1.0
 * @category models
 */
export type Spec =
  | {
      readonly _tag: "Tcp"
      /** An IP address or a host name; `undefined` for every interface. */
      readonly host: string | undefined
      readonly port: number
      readonly backlog: number
      readonly ipv6Only: boolean
      readonly name: string | undefined
    }
  | {
      readonly _tag: "Unix"
      readonly path: string
      readonly mode: number | undefined
      readonly backlog: number
      readonly name: string | undefined
      /**
       * Who the socket file is given to once created (`lchown`): the
       * supervisor sets the workers' user and group here when it runs them as
       * another user.
       */
      readonly owner?: { readonly uid: number | undefined; readonly gid: number | undefined } | undefined
    }
  | { readonly _tag: "Inherited"; readonly fd: number; readonly name: string | undefined }

/**
 * A socket the supervisor holds, listening.
 *
 * @since 0.1.0
 * @category models
 */
export interface Socket {
  /** The descriptor in the supervisor's process. */
  readonly fd: number
  /** The name given to workers in `LISTEN_FDNAMES`. */
  readonly name: string
  /** Where it listens: for TCP the real port, also when port 0 was asked for. */
  readonly address: Address
}

/**
 * @since 0.1.0
 * @category models
 */
export type Address =
  | { readonly _tag: "Tcp"; readonly host: string; readonly port: number; readonly family: "IPv4" | "IPv6" }
  | { readonly _tag: "Unix"; readonly path: string }

/**
 * The default backlog: what Node's `server.listen` uses.
 *
 * @since 0.1.0
 * @category constants
 */
export const DEFAULT_BACKLOG = 511

/**
 * The default mode of a Unix socket's file: `0o660`, read and write for its
 * owner and its group (systemd's `SocketMode=` defaults to `0o666`; a socket
 * anyone on the machine can connect to is a choice to make, with `mode`).
 *
 * @since 0.1.0
 * @category constants
 */
export const DEFAULT_UNIX_MODE = 0o660

/**
 * How an address is written in logs, errors and `LISTEN_FDNAMES`:
 * `127.0.0.1:8080`, `[::1]:8080`, `unix:/run/app.sock`.
 *
 * @since 0.1.0
 * @category formatting
 */
export const format = (address: Address): string =>
  address._tag === "Unix"
    ? `unix:${address.path}`
    : address.family === "IPv6"
      ? `[${address.host}]:${address.port}`
      : `${address.host}:${address.port}`

/**
 * The name a socket gets in `LISTEN_FDNAMES` unless one is given: its
 * address with every `:` (the list's separator) written `_`, such as
 * `127.0.0.1_8080`, `[__1]_8080`, `unix_/run/app.sock`.
 *
 * @since 0.1.0
 * @category formatting
 */
export const defaultName = (address: Address): string => format(address).replaceAll(":", "_").slice(0, 255)

/**
 * How a spec is written before it is bound.
 *
 * @since 0.1.0
 * @category formatting
 */
export const formatSpec = (spec: Spec): string =>
  spec._tag === "Unix"
    ? `unix:${spec.path}`
    : spec._tag === "Inherited"
      ? `fd:${spec.fd}`
      : spec.host === undefined
        ? `:${spec.port}`
        : spec.host.includes(":")
          ? `[${spec.host}]:${spec.port}`
          : `${spec.host}:${spec.port}`

/** A name for `LISTEN_FDNAMES`: systemd allows up to 255 characters, none of them `:` or control characters. */
const validName = (name: string) => name.length > 0 && name.length <= 255 && !/[:\p{Cc}]/u.test(name)

const invalid = (field: string, message: string) => new InvalidOptions({ field, message })

const isPort = (n: unknown): n is number => typeof n === "number" && Number.isInteger(n) && n >= 0 && n <= 65535

/**
 * Parses and checks one address: every bad one is an `InvalidOptions` naming
 * `listen` and the address.
 *
 * @since 0.1.0
 * @category constructors
 */
export const parse = (input: Input, field = "listen"): Effect.Effect<Spec, InvalidOptions> =>
  Effect.suspend((): Effect.Effect<Spec, InvalidOptions> => {
    if (typeof input === "string") return parseString(input, field)
    if (typeof input !== "object" || input === null) {
      return Effect.fail(invalid(field, `listen addresses are strings or objects, got ${String(input)}`))
    }
    const name = input.name
    if (name !== undefined && (typeof name !== "string" || !validName(name))) {
      return Effect.fail(
        invalid(field, `name ${JSON.stringify(name)} must be 1 to 255 characters, without ":" or control characters`)
      )
    }
    if ("fd" in input) {
      if (!Number.isInteger(input.fd) || input.fd < 3) {
        return Effect.fail(invalid(field, `fd must be an inherited descriptor (an integer >= 3), got ${input.fd}`))
      }
      return Effect.succeed({ _tag: "Inherited", fd: input.fd, name })
    }
    const backlog = input.backlog ?? DEFAULT_BACKLOG
    if (!Number.isInteger(backlog) || backlog < 1) {
      return Effect.fail(invalid(field, `backlog must be a positive integer, got ${String(backlog)}`))
    }
    if ("path" in input) {
      if (typeof input.path !== "string" || !input.path.startsWith("/") || input.path.includes("\0")) {
        return Effect.fail(invalid(field, `a Unix socket path must be absolute, got ${JSON.stringify(input.path)}`))
      }
      // sun_path holds 108 bytes with its terminating NUL on Linux (104 on macOS).
      if (Buffer.byteLength(input.path) > 103) {
        return Effect.fail(invalid(field, `the Unix socket path ${input.path} is longer than 103 bytes`))
      }
      const mode = input.mode
      if (mode !== undefined && (!Number.isInteger(mode) || mode < 0 || mode > 0o777)) {
        return Effect.fail(invalid(field, `mode must be a permission such as 0o660, got ${String(mode)}`))
      }
      return Effect.succeed({ _tag: "Unix", path: input.path, mode, backlog, name })
    }
    if (!isPort(input.port)) {
      return Effect.fail(invalid(field, `port must be an integer 0…65535, got ${String(input.port)}`))
    }
    const host = input.host === undefined || input.host === "" ? undefined : input.host
    if (host !== undefined && (typeof host !== "string" || /[\s/]/.test(host))) {
      return Effect.fail(invalid(field, `host must be an IP address or a host name, got ${JSON.stringify(host)}`))
    }
    return Effect.succeed({ _tag: "Tcp", host, port: input.port, backlog, ipv6Only: input.ipv6Only === true, name })
  })

const parseString = (text: string, field: string): Effect.Effect<Spec, InvalidOptions> => {
  const trimmed = text.trim()
  if (trimmed.startsWith("unix:") || trimmed.startsWith("/")) {
    const path = trimmed.startsWith("unix:") ? trimmed.slice("unix:".length) : trimmed
    // A mode as a suffix: unix:/run/app.sock,mode=0660 (octal).
    const suffix = /,mode=([^,]*)$/.exec(path)
    if (suffix === null) return parse({ path }, field)
    if (!/^0?[0-7]{3}$/.test(suffix[1]!)) {
      return Effect.fail(invalid(field, `${JSON.stringify(text)}: mode must be octal permissions such as 0660`))
    }
    return parse({ path: path.slice(0, suffix.index), mode: Number.parseInt(suffix[1]!, 8) }, field)
  }
  if (trimmed.startsWith("fd:")) {
    const fd = trimmed.slice(3)
    return /^\d+$/.test(fd)
      ? parse({ fd: Number(fd) }, field)
      : Effect.fail(invalid(field, `${JSON.stringify(text)}: expected fd:<number>`))
  }
  // [v6]:port, host:port, :port, port
  const bracketed = /^\[([^\]]+)\]:(\d+)$/.exec(trimmed)
  if (bracketed !== null) return parse({ host: bracketed[1]!, port: Number(bracketed[2]) }, field)
  const colon = trimmed.lastIndexOf(":")
  const host = colon === -1 ? "" : trimmed.slice(0, colon)
  const port = colon === -1 ? trimmed : trimmed.slice(colon + 1)
  if (!/^\d+$/.test(port) || host.includes(":")) {
    return Effect.fail(
      invalid(
        field,
        `${JSON.stringify(text)} is not an address: use PORT, HOST:PORT, [IPV6]:PORT, unix:/PATH[,mode=0660] or fd:N`
      )
    )
  }
  return parse({ host, port: Number(port) }, field)
}

/**
 * Parses every address, and checks that no two name the same socket.
 *
 * @since 0.1.0
 * @category constructors
 */
export const parseAll = (
  inputs: ReadonlyArray<Input> | undefined
): Effect.Effect<ReadonlyArray<Spec>, InvalidOptions> =>
  Effect.gen(function* () {
    if (inputs === undefined) return []
    if (!Array.isArray(inputs)) return yield* invalid("listen", "listen must be a list of addresses")
    const specs: Array<Spec> = []
    for (const input of inputs) specs.push(yield* parse(input))
    const seen = new Set<string>()
    for (const spec of specs) {
      const key = formatSpec(spec)
      if (seen.has(key) && !(spec._tag === "Tcp" && spec.port === 0)) {
        return yield* invalid("listen", `${key} is listed twice`)
      }
      seen.add(key)
    }
    return specs
  })

/**
 * The variables a worker with these sockets gets, as systemd's socket
 * activation sets them: `LISTEN_FDS` (how many, from fd 3 on) and
 * `LISTEN_FDNAMES` (their names, `:`-separated). `LISTEN_PID` must be the
 * worker's own pid, so the spawner sets it at exec time.
 *
 * @since 0.1.0
 * @category utils
 */
export const environment = (sockets: ReadonlyArray<Socket>): Readonly<Record<string, string>> =>
  sockets.length === 0
    ? {}
    : { LISTEN_FDS: String(sockets.length), LISTEN_FDNAMES: sockets.map((s) => s.name).join(":") }

/**
 * The first descriptor of a worker's sockets: systemd's `SD_LISTEN_FDS_START`.
 *
 * @since 0.1.0
 * @category constants
 */
export const FIRST_FD = 3

/**
 * The sockets this process was handed by socket activation (systemd, or
 * `systemd-socket-activate`): descriptors 3 … 3+n-1 when `LISTEN_FDS=n` and
 * `LISTEN_PID` is this process's pid, named by `LISTEN_FDNAMES`. Empty
 * otherwise (the variables were meant for another process).
 *
 * @since 0.1.0
 * @category constructors
 */
export const inherited = (env: Readonly<Record<string, string | undefined>>, pid: number): ReadonlyArray<Spec> =>
  // The same reading of systemd's variables as a worker's (`Worker.socketsFromEnv`); a name that cannot be one is dropped.
  socketsFromEnv(env, pid).map(({ fd, name }) => ({ _tag: "Inherited", fd, name: validName(name) ? name : undefined }))

/** Whether the "LISTEN_PID names another process" warning was logged (once per process). */
let foreignPidTold = false

/**
 * Takes the sockets socket activation handed this process, as
 * `sd_listen_fds(1)` does: once taken, `LISTEN_FDS`, `LISTEN_PID` and
 * `LISTEN_FDNAMES` are deleted from `env`, so a second supervisor in the same
 * process does not take descriptor 3 again (by then it may be something
 * else).
 *
 * - `explicit` (the supervisor was given `listen` or `sockets`): the explicit
 *   addresses win; the activation sockets and variables are left alone, and
 *   one warning says so.
 * - `LISTEN_FDS` set but `LISTEN_PID` naming another process (a wrapper such
 *   as `npx` or a shell between systemd and this process): nothing is taken,
 *   and one warning per process says why and what to do.
 *
 * @since 0.1.0
 * @category constructors
 */
export const activation = (options: {
  readonly explicit: boolean
  readonly env?: Record<string, string | undefined> | undefined
  readonly pid?: number | undefined
}): Effect.Effect<ReadonlyArray<Spec>> =>
  Effect.suspend(() => {
    const env = options.env ?? process.env
    const pid = options.pid ?? process.pid
    const count = env["LISTEN_FDS"]
    if (count === undefined) return Effect.succeed([])
    if (env["LISTEN_PID"] !== String(pid)) {
      if (foreignPidTold) return Effect.succeed([])
      foreignPidTold = true
      return Effect.as(
        Effect.logWarning(
          `socket activation: LISTEN_FDS=${count} is set but LISTEN_PID=${env["LISTEN_PID"] ?? "(unset)"} names another process, not this one (pid ${pid}), so its sockets are not used. ` +
            `A program between systemd and this one received them (npx, a shell, a wrapper script): start this program directly (ExecStart=/usr/bin/node /path/to/prefork.js …, or exec it from the wrapper)`
        ),
        []
      )
    }
    const specs = inherited(env, pid)
    if (options.explicit) {
      return Effect.as(
        Effect.logWarning(
          `socket activation handed this process ${specs.length} socket(s) (LISTEN_FDS), but listen addresses are given: serving those; the activation sockets are left alone`
        ),
        []
      )
    }
    delete env["LISTEN_FDS"]
    delete env["LISTEN_PID"]
    delete env["LISTEN_FDNAMES"]
    return Effect.succeed(specs)
  })
