/**
 * The client side of the control protocol (`ControlProtocol.ts`): one request
 * on a connection, one answer read back within a deadline and a size cap, and
 * a check that the answer has the shape prefork gives. Used by `prefork ctl`
 * and by `prefork` itself (to learn which pid holds a name).
 *
 * Promise-based and free of Effect: `prefork ctl` loads no runtime.
 *
 * @since 0.1.0
 */
import * as Net from "node:net"
import * as Duration from "effect/Duration"
import type { Info, StatusRow } from "./ControlProtocol.ts"

/**
 * The longest answer read, in bytes: a status of 100,000 workers fits.
 *
 * @since 0.1.0
 * @category constants
 */
export const MAX_ANSWER = 64 * 1024 * 1024

/**
 * Why no usable answer came: the message says it for a person.
 *
 * @since 0.1.0
 * @category errors
 */
export class NoAnswer extends Error {
  /** The connection was refused: nothing listens (a stale socket). */
  readonly refused: boolean
  /** The deadline passed with no answer. */
  readonly timedOut: boolean
  constructor(message: string, why: { readonly refused?: boolean; readonly timedOut?: boolean } = {}) {
    super(message)
    this.refused = why.refused ?? false
    this.timedOut = why.timedOut ?? false
  }
}

/** One request on a connection; see {@link ask} and {@link askAndAwaitClose}. */
const exchange = (
  path: string,
  request: Record<string, unknown>,
  timeoutMillis: number,
  maxAnswer: number,
  untilClosed: boolean
): Promise<unknown> =>
  new Promise((resolve, reject) => {
    const socket = Net.connect(path)
    const chunks: Array<Buffer> = []
    let size = 0
    let answer: { readonly value: unknown } | undefined
    const settle = (outcome: () => void) => {
      clearTimeout(timer)
      socket.destroy()
      outcome()
    }
    const fail = (error: NoAnswer) => settle(() => reject(error))
    const done = () => settle(() => resolve(answer!.value))
    const within = Duration.format(Duration.millis(timeoutMillis))
    const timer = setTimeout(
      () =>
        fail(
          new NoAnswer(
            answer !== undefined
              ? `prefork on ${path} did not stop within ${within}; --timeout <duration> waits longer`
              : `no answer from ${path} within ${within}` +
                  (request["cmd"] === "status" || request["cmd"] === "info"
                    ? ""
                    : ` (the ${String(request["cmd"])} may still be under way)`) +
                  "; --timeout <duration> waits longer",
            { timedOut: true }
          )
        ),
      timeoutMillis
    )
    socket.once("error", (error: NodeJS.ErrnoException) => {
      if (answer !== undefined) return done()
      fail(
        error.code === "EACCES"
          ? new NoAnswer(`no permission to use ${path} (it belongs to another user)`)
          : new NoAnswer(
              `no prefork answers on ${path} (${error.code ?? error.message}): is it running, with --control there?`,
              { refused: error.code === "ECONNREFUSED" }
            )
      )
    })
    socket.once("connect", () => socket.write(`${JSON.stringify(request)}\n`))
    socket.on("data", (chunk: Buffer) => {
      if (answer !== undefined) return
      const nl = chunk.indexOf(10)
      chunks.push(nl === -1 ? chunk : chunk.subarray(0, nl))
      size += nl === -1 ? chunk.length : nl
      if (size > maxAnswer) return fail(new NoAnswer(`the answer on ${path} is longer than ${maxAnswer} bytes`))
      if (nl === -1) return
      try {
        answer = { value: JSON.parse(Buffer.concat(chunks).toString("utf8")) }
      } catch {
        return fail(new NoAnswer(`the answer on ${path} is not prefork's: not JSON`))
      }
      // An error answer is final at once; a successful one, when asked, once prefork has closed the connection.
      const ok = typeof answer.value === "object" && answer.value !== null && (answer.value as { ok?: unknown }).ok
      if (!untilClosed || ok !== true) done()
    })
    socket.once("close", () =>
      answer !== undefined ? done() : fail(new NoAnswer(`${path} closed the connection without an answer`))
    )
  })

/**
 * Sends one request and resolves with the answer's first line, parsed; rejects
 * with a {@link NoAnswer} when there is none within `timeoutMillis` (a
 * monotonic timer), the connection fails, or the answer is over `maxAnswer`
 * bytes or not JSON.
 *
 * @since 0.1.0
 * @category requests
 */
export const ask = (
  path: string,
  request: Record<string, unknown>,
  timeoutMillis: number,
  maxAnswer: number = MAX_ANSWER
): Promise<unknown> => exchange(path, request, timeoutMillis, maxAnswer, false)

/**
 * Sends `request` and resolves with its answer, parsed, once the server has
 * also closed the connection (prefork has stopped); an error answer resolves
 * at once. Rejects with a {@link NoAnswer} as {@link ask} does, and at the
 * deadline.
 *
 * @since 0.1.0
 * @category requests
 */
export const askAndAwaitClose = (
  path: string,
  request: Record<string, unknown>,
  timeoutMillis: number,
  maxAnswer: number = MAX_ANSWER
): Promise<unknown> => exchange(path, request, timeoutMillis, maxAnswer, true)

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value)
const isCount = (value: unknown): value is number =>
  typeof value === "number" && Number.isSafeInteger(value) && value >= 0
const isCountOrNull = (value: unknown) => value === null || isCount(value)
const isNumberOrNull = (value: unknown) => value === null || (typeof value === "number" && Number.isFinite(value))
const isStringOrNull = (value: unknown) => value === null || typeof value === "string"

const isRow = (row: unknown): row is StatusRow =>
  isRecord(row) &&
  isCount(row["task"]) &&
  isCountOrNull(row["pid"]) &&
  typeof row["state"] === "string" &&
  isCount(row["restarts"]) &&
  isNumberOrNull(row["uptimeMillis"]) &&
  isNumberOrNull(row["cpuPercent"]) &&
  isNumberOrNull(row["rssBytes"]) &&
  isStringOrNull(row["lastExit"])

/**
 * A valid `info` answer's body, or undefined.
 *
 * @since 0.1.0
 * @category parsing
 */
export const asInfo = (reply: unknown): Info | undefined =>
  isRecord(reply) &&
  reply["ok"] === true &&
  isStringOrNull(reply["name"]) &&
  isCount(reply["pid"]) &&
  isCount(reply["uptimeMillis"]) &&
  isCount(reply["ready"]) &&
  isCount(reply["processes"]) &&
  Array.isArray(reply["command"]) &&
  reply["command"].every((a) => typeof a === "string")
    ? (reply as unknown as Info)
    : undefined

/**
 * What is wrong with an answer to `cmd`, or undefined when it is one prefork
 * gives (an error answer included).
 *
 * @since 0.1.0
 * @category parsing
 */
export const malformed = (cmd: string, reply: unknown): string | undefined => {
  if (!isRecord(reply) || typeof reply["ok"] !== "boolean") return 'not {"ok": …}'
  if (reply["ok"] === false) return typeof reply["error"] === "string" ? undefined : "an error without a message"
  if (cmd === "status") {
    const workers = reply["workers"]
    const spares = reply["spares"] ?? []
    if (!Array.isArray(workers) || !workers.every(isRow)) return "no valid worker rows"
    if (!Array.isArray(spares) || !spares.every(isCount)) return "invalid spares"
  }
  if (cmd === "scale" && !isCount(reply["processes"])) return "no number of workers"
  if (cmd === "info" && asInfo(reply) === undefined) return "no valid info"
  if (cmd === "stop" && !isCount(reply["pid"])) return "no pid"
  return undefined
}
