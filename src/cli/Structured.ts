/**
 * Worker lines that are already records stay records. Under `--log-format json`
 * a worker line that is one JSON object (pino, bunyan, Effect's
 * `Logger.formatJson`, …) is written as that object with one key added,
 * `prefork`, holding prefork's fields: `{"level":30,"msg":"hi","pid":7,"prefork":{"taskId":0,"pid":7,"stream":"stdout"}}`.
 * The worker's own text is kept byte for byte (its key order, its numbers),
 * and none of its keys is overwritten: prefork's sit under a name of their
 * own, since a worker's record often has a `pid`, `level` or `time` of its own.
 * Under `--log-format logfmt` a line that is already logfmt is written with
 * prefork's keys before it, dotted: `prefork.taskId=0 prefork.pid=7 prefork.stream=stdout level=info msg=hi`.
 *
 * Anything else (plain text, malformed JSON, a JSON array or string, an
 * object that has a `prefork` key of its own, a line longer than
 * {@link MAX_LENGTH}) is not a record: the caller quotes it as `message`.
 * Only a line whose first character is `{` is parsed at all.
 *
 * @since 0.1.0
 */
import type { OutputLine } from "../ProcessSpawner.ts"

/**
 * The longest line taken as a record (64 KiB of text): a longer one is quoted
 * as `message`, so no worker line costs prefork more than one bounded parse.
 *
 * @since 0.1.0
 * @category constants
 */
export const MAX_LENGTH = 64 * 1024

/**
 * prefork's fields of a worker line: `taskId` (or `spare: true` for a warm spare not yet given one), `pid`, `stream`.
 *
 * @since 0.1.0
 * @category utils
 */
export const fields = (line: OutputLine): Record<string, string | number | boolean> =>
  line.spare === true
    ? { spare: true, pid: line.pid, stream: line.stream }
    : { taskId: line.taskId as number, pid: line.pid, stream: line.stream }

/**
 * The worker's JSON object with prefork's fields added under `prefork`, or
 * `undefined` when the line is not one JSON object (see the module's description).
 *
 * @since 0.1.0
 * @category formatting
 */
export const json = (line: OutputLine): string | undefined => {
  const text = line.line.trim()
  if (text.charCodeAt(0) !== 123 /* { */ || text.charCodeAt(text.length - 1) !== 125 /* } */) return undefined
  if (text.length > MAX_LENGTH) return undefined
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch {
    return undefined
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed) || Object.hasOwn(parsed, "prefork")) {
    return undefined
  }
  const added = `"prefork":${JSON.stringify(fields(line))}}`
  // The worker's text up to its closing brace, kept as it was; a comma unless the object is empty.
  return `${text.slice(0, -1)}${Object.keys(parsed).length > 0 ? "," : ""}${added}`
}

/** Whole-line logfmt: `key=value` pairs, a value bare or double-quoted, separated by spaces. */
const LOGFMT = /^[^\s="]+=(?:"(?:[^"\\]|\\.)*"|[^\s"]*)(?: +[^\s="]+=(?:"(?:[^"\\]|\\.)*"|[^\s"]*))*$/

/**
 * The worker's logfmt line with prefork's keys before it (`prefork.taskId=…`),
 * or `undefined` when the line is not whole logfmt pairs.
 *
 * @since 0.1.0
 * @category formatting
 */
export const logfmt = (line: OutputLine): string | undefined => {
  const text = line.line.trim()
  if (text.length === 0 || text.length > MAX_LENGTH || !LOGFMT.test(text)) return undefined
  const keys = Object.entries(fields(line)).map(([key, value]) => `prefork.${key}=${value}`)
  return `${keys.join(" ")} ${text}`
}
