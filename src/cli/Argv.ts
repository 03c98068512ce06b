/**
 * What `prefork` reads from its command line before `effect/cli` sees it, and
 * the value syntaxes of its options. Pure functions, no I/O.
 *
 * - {@link splitCommand}: everything from the command on belongs to the
 *   command. `prefork -n 2 node app.js --port 80` runs `node app.js --port 80`
 *   as if `--` had been written before `node`, so the child's own options are
 *   never read as prefork's.
 * - {@link parseDuration}: `500ms`, `5s`, `1.5m`, `1h`, `0`, or Effect's
 *   `"5 seconds"`.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Option from "effect/Option"

/**
 * Inserts `--` before the first operand (the command) unless a `--` comes
 * before it. A `--` after the command is the command's own, passed on as it
 * is (`prefork node app.js -- a b`). `valueFlags` names the options that take a value from the next
 * argument (without dashes: `"n"`, `"processes"`); `booleanFlags` those that
 * take none but may be followed by a boolean word (`--prefix false`), as
 * `effect/cli` reads them.
 *
 * @since 0.1.0
 * @category parsing
 */
export const splitCommand = (
  argv: ReadonlyArray<string>,
  valueFlags: ReadonlySet<string>,
  booleanFlags: ReadonlySet<string>
): ReadonlyArray<string> => {
  let i = 0
  while (i < argv.length) {
    const arg = argv[i]!
    if (arg === "--") return argv
    if (!isOption(arg)) return [...argv.slice(0, i), "--", ...argv.slice(i)]
    i++
    if (arg.includes("=")) continue
    const name = arg.startsWith("--") ? arg.slice(2) : arg.slice(-1)
    const next = argv[i]
    if (next === undefined || isOption(next)) continue
    if (valueFlags.has(name) || (booleanFlags.has(name) && BOOLEAN_WORDS.has(next))) i++
  }
  return argv
}

// The words `effect/cli` reads as the value of a boolean flag (Schema's true and false literals).
const BOOLEAN_WORDS = new Set(["true", "yes", "on", "1", "y", "false", "no", "off", "0", "n"])

/** As `effect/cli`'s lexer: `-` and negative numbers are values, not options. */
const isOption = (arg: string): boolean =>
  arg.startsWith("-") && arg !== "-" && !/^-(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/.test(arg)

const UNITS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }

/**
 * Reads a duration: a number with a unit (`ms`, `s`, `m`, `h`: `500ms`, `5s`,
 * `1.5m`), `0`, or any input `Duration.fromInput` accepts as text
 * (`"5 seconds"`). A bare number other than 0 is refused: it would be unclear
 * whether it means seconds or milliseconds.
 *
 * @since 0.1.0
 * @category parsing
 */
export const parseDuration = (text: string): Option.Option<Duration.Duration> => {
  const trimmed = text.trim()
  if (trimmed === "0") return Option.some(Duration.zero)
  const short = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(trimmed)
  if (short !== null) return Option.some(Duration.millis(Number(short[1]) * UNITS[short[2]!]!))
  if (!/^\d+(?:\.\d+)?\s+[a-z]+$/.test(trimmed)) return Option.none()
  return Option.filter(
    Duration.fromInput(trimmed as Duration.Input),
    (d) => Number.isFinite(Duration.toMillis(d)) && Duration.toMillis(d) >= 0
  )
}

/**
 * Reads `KEY=VALUE` (the value may be empty or contain `=`).
 *
 * @since 0.1.0
 * @category parsing
 */
export const parseEnv = (text: string): Option.Option<readonly [string, string]> => {
  const eq = text.indexOf("=")
  if (eq <= 0 || text.includes("\0")) return Option.none()
  return Option.some([text.slice(0, eq), text.slice(eq + 1)] as const)
}

/**
 * Reads `--intensity`: `<restarts>/<window>`, such as `5/10s` (at most 5
 * restarts within any 10 seconds, all workers together), with `,per-worker`
 * for a window of each worker's own (`5/10s,per-worker`).
 *
 * @since 0.1.0
 * @category parsing
 */
export const parseIntensity = (
  text: string
): Option.Option<{
  readonly maxRestarts: number
  readonly within: Duration.Duration
  readonly per: "supervisor" | "worker"
}> => {
  const perWorker = /,\s*per-worker$/.exec(text)
  const body = perWorker === null ? text : text.slice(0, perWorker.index)
  const slash = body.indexOf("/")
  if (slash === -1) return Option.none()
  const count = body.slice(0, slash).trim()
  if (!/^\d+$/.test(count)) return Option.none()
  return Option.flatMap(parseDuration(body.slice(slash + 1)), (within) =>
    Duration.toMillis(within) > 0
      ? Option.some({ maxRestarts: Number(count), within, per: perWorker === null ? "supervisor" : "worker" })
      : Option.none()
  )
}

/**
 * Reads `--max-restarts`: a whole number, or `infinity` for no limit.
 *
 * @since 0.1.0
 * @category parsing
 */
export const parseCount = (text: string): Option.Option<number> => {
  const trimmed = text.trim().toLowerCase()
  if (trimmed === "infinity" || trimmed === "inf" || trimmed === "unlimited") return Option.some(Infinity)
  return /^\d+$/.test(trimmed) ? Option.some(Number(trimmed)) : Option.none()
}

/**
 * Reads `--normal-exit-codes`: a comma-separated list of codes 0..255.
 *
 * @since 0.1.0
 * @category parsing
 */
export const parseCodes = (text: string): Option.Option<ReadonlyArray<number>> => {
  const parts = text.split(",").map((p) => p.trim())
  if (!parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255)) return Option.none()
  return Option.some(parts.map(Number))
}

/**
 * An address to serve on: `host:port`, `[v6]:port`, `:port` or `port` (no
 * host: every interface). Port 0 asks the system for a free one.
 *
 * @since 0.1.0
 * @category models
 */
export interface HostPort {
  readonly host: string | undefined
  readonly port: number
}

/**
 * Reads `--metrics`: `127.0.0.1:9464`, `localhost:9464`, `[::1]:9464`,
 * `:9464` or `9464` (every interface), a port from 0 to 65535.
 *
 * @since 0.1.0
 * @category parsing
 */
export const parseHostPort = (text: string): Option.Option<HostPort> => {
  const m = /^(?:(?:\[([0-9a-fA-F:.%\w-]+)\]|([^\s:[\]/]*)):)?(\d{1,5})$/.exec(text.trim())
  if (m === null || Number(m[3]) > 65535) return Option.none()
  const host = m[1] ?? m[2]
  return Option.some({ host: host === undefined || host.length === 0 ? undefined : host, port: Number(m[3]) })
}

/**
 * A {@link HostPort} as it is written: `127.0.0.1:9464`, `[::1]:9464`, `:9464`.
 *
 * @since 0.1.0
 * @category parsing
 */
export const formatHostPort = ({ host, port }: HostPort): string =>
  `${host === undefined ? "" : host.includes(":") ? `[${host}]` : host}:${port}`

/**
 * Reads a whole number >= 0 (`--spares`).
 *
 * @since 0.1.0
 * @category parsing
 */
export const parseWhole = (text: string): Option.Option<number> =>
  /^\d{1,9}$/.test(text.trim()) ? Option.some(Number(text.trim())) : Option.none()

/**
 * Reads a duration longer than zero (see {@link parseDuration}).
 *
 * @since 0.1.0
 * @category parsing
 */
export const parsePositiveDuration = (text: string): Option.Option<Duration.Duration> =>
  Option.filter(parseDuration(text), (d) => Duration.toMillis(d) > 0)
