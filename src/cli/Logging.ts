/**
 * The supervisor's own messages, through Effect's `Logger`, one record per
 * line on stderr (stdout carries the workers' output):
 *
 * - `pretty` (default): `[prefork 12:00:04.317] WARN child 1 (pid 1234) exited with status 1, restarting`,
 *   the level colored on a terminal;
 * - `json`: Effect's `Logger.formatJson`, one JSON object per line, with
 *   `taskId`, `pid` and `code` or `signal` as annotations;
 * - `logfmt`: Effect's `Logger.formatLogFmt`.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import type * as LogLevel from "effect/LogLevel"
import type { Stream } from "./Output.ts"

/**
 * @since 0.1.0
 * @category models
 */
export type Format = "pretty" | "json" | "logfmt"

/**
 * @since 0.1.0
 * @category constants
 */
export const FORMATS: ReadonlyArray<Format> = ["pretty", "json", "logfmt"]

const LEVEL_COLORS: Partial<Record<LogLevel.LogLevel, number>> = {
  Fatal: 31,
  Error: 31,
  Warn: 33,
  Info: 32,
  Debug: 2,
  Trace: 2
}

const two = (n: number) => String(n).padStart(2, "0")
const time = (date: Date) =>
  `${two(date.getHours())}:${two(date.getMinutes())}:${two(date.getSeconds())}.${String(date.getMilliseconds()).padStart(3, "0")}`

const text = (message: unknown): string =>
  (Array.isArray(message) ? message : [message])
    .map((part) => (typeof part === "string" ? part : JSON.stringify(part)))
    .join(" ")

/**
 * The `pretty` logger: one line per record, the cause (if any) after it.
 *
 * @since 0.1.0
 * @category constructors
 */
export const pretty = (stream: Stream, color: boolean): Logger.Logger<unknown, void> =>
  Logger.make(({ cause, date, logLevel, message }) => {
    const level = logLevel.toUpperCase()
    const code = LEVEL_COLORS[logLevel]
    const shown = color && code !== undefined ? `\x1b[${code}m${level}\x1b[0m` : level
    const head = color ? `\x1b[2m[prefork ${time(date)}]\x1b[0m` : `[prefork ${time(date)}]`
    const tail = cause.reasons.length > 0 ? `\n${Cause.pretty(cause)}` : ""
    stream.write(`${head} ${shown} ${text(message)}${tail}\n`)
  })

const lines = (stream: Stream, formatter: Logger.Logger<unknown, string>): Logger.Logger<unknown, void> =>
  Logger.make((options) => {
    stream.write(`${formatter.log(options)}\n`)
  })

/**
 * The logger layer for a format, replacing Effect's default logger.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (format: Format, stream: Stream, color: boolean): Layer.Layer<never> =>
  Logger.layer([
    format === "json"
      ? lines(stream, Logger.formatJson)
      : format === "logfmt"
        ? lines(stream, Logger.formatLogFmt)
        : pretty(stream, color)
  ])
