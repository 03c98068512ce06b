/**
 * The preforks of this user, as `prefork ctl ls` shows them: every control
 * socket in the private runtime directory (`Names.list`, links never
 * followed, at most `Names.MAX_LISTED`) is asked `info`, all at once, each
 * within a short deadline and a size cap. A socket nothing listens on is
 * `stale`; one that accepts and does not answer in time is `no answer`; one
 * that answers something else is `not prefork`: each is a row, never a hang
 * or a crash.
 *
 * @since 0.1.0
 */
import { columns } from "./Columns.ts"
import * as Client from "./ControlClient.ts"
import type { Info } from "./ControlProtocol.ts"
import * as Names from "./Names.ts"
import type * as RuntimeDir from "./RuntimeDir.ts"
import * as Status from "./Status.ts"

/**
 * The largest `info` answer read, in bytes.
 *
 * @since 0.1.0
 * @category constants
 */
export const MAX_INFO = 64 * 1024

/**
 * One socket in the directory and what answered on it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Found {
  readonly name: string
  readonly path: string
  readonly state: "running" | "stale" | "no answer" | "not prefork"
  /** The prefork's own account, when `running`. */
  readonly info: Info | undefined
  /** Why it is not `running`. */
  readonly error: string | undefined
}

/**
 * Every socket found, the entries skipped (not a socket of this user), and
 * how many sockets were past the cap.
 *
 * @since 0.1.0
 * @category models
 */
export interface Survey extends Omit<Names.Listing, "sockets"> {
  readonly found: ReadonlyArray<Found>
}

/**
 * Asks every control socket in the runtime directory who it is, in parallel,
 * each within `timeoutMillis`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const survey = async (
  timeoutMillis: number,
  env: NodeJS.ProcessEnv = process.env
): Promise<Survey | RuntimeDir.UntrustedPath> => {
  const listing = Names.list(env)
  if (!("sockets" in listing)) return listing
  const found = await Promise.all(
    listing.sockets.map(({ name, path }): Promise<Found> =>
      Client.ask(path, { cmd: "info" }, timeoutMillis, MAX_INFO).then(
        (reply) => {
          const info = Client.asInfo(reply)
          return info === undefined
            ? { name, path, state: "not prefork", info, error: "its answer to info is not prefork's" }
            : { name, path, state: "running", info, error: undefined }
        },
        (error: unknown) => {
          const refused = error instanceof Client.NoAnswer && error.refused
          const message = error instanceof Error ? error.message : String(error)
          return { name, path, state: refused ? "stale" : "no answer", info: undefined, error: message }
        }
      )
    )
  )
  return { dir: listing.dir, found, skipped: listing.skipped, more: listing.more }
}

/** A command line as one cell: arguments with spaces quoted, at most 80 characters. */
const commandCell = (command: ReadonlyArray<string>): string => {
  const text = command.map((a) => (/^[\w./:=@%+,-]+$/.test(a) ? a : JSON.stringify(a))).join(" ")
  return text.length > 80 ? `${text.slice(0, 79)}…` : text
}

/**
 * The table of `prefork ctl ls`, without a trailing newline: NAME, PID,
 * WORKERS (ready/wanted), UPTIME, COMMAND; a socket that is not a running
 * prefork shows its state in place of the command.
 *
 * @since 0.1.0
 * @category formatting
 */
export const table = (found: ReadonlyArray<Found>): string => {
  const header = ["NAME", "PID", "WORKERS", "UPTIME", "COMMAND"]
  const body = found.map((f) =>
    f.info === undefined
      ? [f.name, "-", "-", "-", `(${f.state})`]
      : [
          f.name,
          String(f.info.pid),
          `${f.info.ready}/${f.info.processes}`,
          Status.formatUptime(f.info.uptimeMillis),
          commandCell(f.info.command)
        ]
  )
  return columns(header, body)
}

/**
 * The rows of `prefork ctl ls --json`: one object per socket.
 *
 * @since 0.1.0
 * @category formatting
 */
export const json = (found: ReadonlyArray<Found>): string =>
  JSON.stringify(
    found.map((f) => ({
      name: f.name,
      state: f.state,
      pid: f.info?.pid ?? null,
      ready: f.info?.ready ?? null,
      processes: f.info?.processes ?? null,
      uptimeMillis: f.info?.uptimeMillis ?? null,
      command: f.info?.command ?? null,
      socket: f.path,
      ...(f.error === undefined ? {} : { error: f.error })
    })),
    null,
    2
  )
