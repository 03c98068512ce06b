/**
 * Workers' output as `prefork` shows it: each line a worker writes becomes
 * one line on prefork's own stream of the same name, prefixed with
 * `[<task id>:<pid>]`, the prefix colored by task id when that stream is a
 * terminal.
 *
 * A line is written with one `write` call, so lines of different workers never
 * interleave inside a line, and the spawner hands over the last unterminated
 * line of a worker that crashed. A reader that goes away (`prefork … | head`)
 * ends the writing to that stream instead of crashing prefork.
 *
 * @since 0.1.0
 */
import type { OutputLine } from "../ProcessSpawner.ts"

/**
 * Where lines go: `process.stdout` and `process.stderr`, or a test's buffers.
 *
 * @since 0.1.0
 * @category models
 */
export interface Stream {
  readonly isTTY?: boolean | undefined
  write(text: string): unknown
  on(event: "error", listener: (error: Error) => void): unknown
}

// Cyan, yellow, green, magenta, blue, then their bright forms: never red, which reads as an error.
const PALETTE = [36, 33, 32, 35, 34, 96, 93, 92, 95, 94]

/**
 * Whether to color what goes to a stream: `NO_COLOR` turns color off,
 * `FORCE_COLOR` (other than `0` or `false`) on, `TERM=dumb` off; otherwise
 * only on a terminal.
 *
 * @since 0.1.0
 * @category utils
 */
export const useColor = (stream: Pick<Stream, "isTTY">, env: Readonly<Record<string, string | undefined>>): boolean => {
  if (env["NO_COLOR"] !== undefined && env["NO_COLOR"] !== "") return false
  const force = env["FORCE_COLOR"]
  if (force !== undefined && force !== "") return force !== "0" && force.toLowerCase() !== "false"
  if (env["TERM"] === "dumb") return false
  return stream.isTTY === true
}

/**
 * The prefix of a worker's line: `[3:41523] `, colored by task id; `[spare:41524] ` for a warm spare not yet given one.
 *
 * @since 0.1.0
 * @category formatting
 */
export const prefix = (taskId: number, pid: number, color: boolean, spare = false): string => {
  const text = `[${spare ? "spare" : taskId}:${pid}]`
  return color && !spare ? `\x1b[${PALETTE[taskId % PALETTE.length]}m${text}\x1b[0m ` : `${text} `
}

/**
 * Builds the `onOutput` callback of the supervisor: every line of every worker
 * to `stdout` or `stderr`, prefixed.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: {
  readonly stdout: Stream
  readonly stderr: Stream
  readonly env: Readonly<Record<string, string | undefined>>
  /** `pretty` prefixes each line; `json` and `logfmt` write each as a record, with prefork's own key names. */
  readonly format?: "pretty" | "json" | "logfmt" | undefined
}): ((line: OutputLine) => void) => {
  const format = options.format ?? "pretty"
  const out = writer(options.stdout, useColor(options.stdout, options.env), format)
  const err = writer(options.stderr, useColor(options.stderr, options.env), format)
  return (line) => (line.stream === "stdout" ? out : err)(line)
}

/** A logfmt value: bare when it can be, else quoted as JSON quotes it. */
const logfmtValue = (value: string | number | boolean): string =>
  typeof value !== "string" || /^[^\s"=\\]+$/.test(value) ? String(value) : JSON.stringify(value)

/**
 * One worker line as a record of the log format: the same keys as prefork's
 * own records (`message`, `level`, `timestamp`, and `taskId`, `pid`, `stream`
 * as annotations), so one parser reads the whole stream.
 *
 * @since 0.1.0
 * @category formatting
 */
export const record = (line: OutputLine, format: "json" | "logfmt", date: Date = new Date()): string => {
  const annotations =
    line.spare === true
      ? { spare: true, pid: line.pid, stream: line.stream }
      : { taskId: line.taskId as number, pid: line.pid, stream: line.stream }
  if (format === "json") {
    return JSON.stringify({ message: line.line, level: "INFO", timestamp: date.toISOString(), annotations, spans: {} })
  }
  return [
    `timestamp=${date.toISOString()}`,
    "level=INFO",
    `message=${logfmtValue(line.line)}`,
    ...Object.entries(annotations).map(([k, v]) => `${k}=${logfmtValue(v)}`)
  ].join(" ")
}

const writer = (stream: Stream, color: boolean, format: "pretty" | "json" | "logfmt") => {
  let closed = false
  // The reader went away (EPIPE) or the stream broke: drop the rest rather than crash with the workers running.
  stream.on("error", () => {
    closed = true
  })
  return (line: OutputLine) => {
    if (closed) return
    stream.write(
      format === "pretty"
        ? `${prefix(line.taskId, line.pid, color, line.spare === true)}${line.line}\n`
        : `${record(line, format)}\n`
    )
  }
}
