/**
 * Workers' output as `prefork` shows it: each line a worker writes becomes
 * one line on prefork's own stream of the same name, prefixed with
 * `[<task id>:<pid>]`, the prefix colored by task id when that stream is a
 * terminal; under `--log-format json` or `logfmt`, a record (a worker's own
 * JSON object or logfmt line stays one, see {@link Structured}).
 *
 * A line is written with one `write` call, so lines of different workers never
 * interleave inside a line, and the spawner hands over the last unterminated
 * line of a worker that crashed.
 *
 * Backpressure: when a stream's buffer is full (`write` returns `false`, a
 * reader that does not keep up, `prefork … | slow`), the line's sink returns an
 * effect that waits for the stream's `'drain'`; the spawner stops reading that
 * worker's pipe meanwhile, so the pipe fills and the worker's own writes wait,
 * instead of prefork buffering its output without bound. prefork holds at most
 * one line per worker stream beyond the stream's buffer. A reader that goes
 * away (`prefork … | head`, `EPIPE`) ends the writing to that stream instead of
 * crashing prefork: whoever waits is released, and later lines are dropped.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import type { OutputLine } from "../ProcessSpawner.ts"
import * as Structured from "./Structured.ts"

/**
 * Where lines go: `process.stdout` and `process.stderr`, or a test's buffers.
 *
 * @since 0.1.0
 * @category models
 */
export interface Stream {
  readonly isTTY?: boolean | undefined
  /**
   * `false` when the stream's buffer is full: the stream then emits `'drain'`
   * (or `'close'`, or `'error'`) later, as a Node `Writable` does.
   */
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
 * to `stdout` or `stderr`, prefixed. It returns nothing while the stream takes
 * the lines, and an effect that waits for the stream to drain when it does
 * not (see the module's description).
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
}): ((line: OutputLine) => void | Effect.Effect<void>) => {
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
 * as annotations), so one parser reads the whole stream. A line that is
 * already a record of that format (a JSON object, logfmt pairs) stays one,
 * with prefork's fields under `prefork` (see {@link Structured}).
 *
 * @since 0.1.0
 * @category formatting
 */
export const record = (line: OutputLine, format: "json" | "logfmt", date: Date = new Date()): string => {
  const structured = format === "json" ? Structured.json(line) : Structured.logfmt(line)
  if (structured !== undefined) return structured
  const annotations = Structured.fields(line)
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
  let listening = false
  /** Who waits for the stream to drain (one per blocked worker stream at most). */
  let waiting: Array<() => void> = []
  const release = () => {
    const woken = waiting
    waiting = []
    for (const wake of woken) wake()
  }
  // The reader went away (EPIPE) or the stream broke: drop the rest rather than crash with the workers running.
  stream.on("error", () => {
    closed = true
    release()
  })
  /** Waits until the stream drains, breaks or closes; made once, run by every blocked line. */
  const drained = Effect.callback<void>((resume) => {
    if (closed) return resume(Effect.void)
    if (!listening) {
      // Only a stream whose write said `false` gets here: a Writable, which says when it drains.
      listening = true
      const on = stream.on as unknown as (event: "drain" | "close", listener: () => void) => unknown
      on.call(stream, "drain", release)
      on.call(stream, "close", () => {
        closed = true
        release()
      })
    }
    const wake = () => resume(Effect.void)
    waiting.push(wake)
    return Effect.sync(() => {
      waiting = waiting.filter((w) => w !== wake)
    })
  })
  return (line: OutputLine): void | Effect.Effect<void> => {
    if (closed) return
    const accepted = stream.write(
      format === "pretty"
        ? `${prefix(line.taskId, line.pid, color, line.spare === true)}${line.line}\n`
        : `${record(line, format)}\n`
    )
    return accepted === false && !closed ? drained : undefined
  }
}
