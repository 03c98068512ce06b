/**
 * `prefork ctl`: a running prefork, driven from another terminal through its
 * control socket (see `Control.ts`).
 *
 * ```
 * prefork ctl status            the workers: pid, state, restarts, uptime, CPU %, RSS, last exit
 * prefork ctl restart <task>    stop one worker and start it again (no budget spent)
 * prefork ctl reload            a rolling reload that loses nothing (as SIGHUP)
 * prefork ctl scale <n>         n workers
 * ```
 *
 * `--control <path>` (or `PREFORK_CONTROL`) names another socket than the
 * default; `--timeout <duration>` bounds the wait for the answer (default 10 s
 * for `status`, 10 min for the others, which answer once the workers have
 * changed). Before connecting, the socket and its directory are checked as
 * prefork checks them (`RuntimeDir.ts`): a socket another user could have
 * put there is never talked to. Exit codes: 0 done; 1 prefork answered with
 * an error; 2 bad usage; 3 no prefork answers (not running, another path, no
 * permission, no answer in time, or an answer that is not prefork's); 4 the
 * socket or its directory is not trusted.
 *
 * @since 0.1.0
 */
import * as Net from "node:net"
import * as Duration from "effect/Duration"
import * as Option from "effect/Option"
import { parsePositiveDuration } from "./Argv.ts"
import type { StatusRow } from "./ControlProtocol.ts"
import * as RuntimeDir from "./RuntimeDir.ts"
import * as Status from "./Status.ts"

const USAGE = `Usage: prefork ctl [--control <path>] [--timeout <duration>] status | restart <task> | reload | scale <n>
Drives a running prefork through its control socket (default: ${RuntimeDir.defaultPath()}).
`

/**
 * The exit codes of `prefork ctl`.
 *
 * @since 0.1.0
 * @category constants
 */
export const ExitCode = {
  OK: 0,
  /** prefork answered with an error. */
  FAILED: 1,
  USAGE: 2,
  /** No prefork answers: not running, another path, no permission, no answer in time, or a malformed one. */
  NO_ANSWER: 3,
  /** The socket or its directory is not trusted: another user could have put it there. */
  UNTRUSTED: 4
} as const

/**
 * The longest answer `prefork ctl` reads, in bytes: a status of 100,000
 * workers fits.
 *
 * @since 0.1.0
 * @category constants
 */
export const MAX_ANSWER = 64 * 1024 * 1024

const STATUS_TIMEOUT = Duration.seconds(10)
const CHANGE_TIMEOUT = Duration.minutes(10)

const mib = (bytes: number | null) => (bytes === null ? "-" : `${(bytes / 1048576).toFixed(1)} MiB`)
const percent = (p: number | null) => (p === null ? "-" : `${p.toFixed(1)} %`)

/**
 * The status table of `prefork ctl status`, without a trailing newline.
 *
 * @since 0.1.0
 * @category formatting
 */
export const table = (rows: ReadonlyArray<StatusRow>): string => {
  const header = ["TASK", "PID", "STATE", "RESTARTS", "UPTIME", "CPU", "RSS", "LAST EXIT"]
  const body = rows.map((row) => [
    String(row.task),
    row.pid === null ? "-" : String(row.pid),
    row.state,
    String(row.restarts),
    row.uptimeMillis === null ? "-" : Status.formatUptime(row.uptimeMillis),
    percent(row.cpuPercent),
    mib(row.rssBytes),
    row.lastExit ?? "-"
  ])
  const widths = header.map((h, i) => body.reduce((widest, cells) => Math.max(widest, cells[i]!.length), h.length))
  return [header, ...body]
    .map((cells) => cells.map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i]! + 2))).join(""))
    .join("\n")
}

/** Why no usable answer came. */
class NoAnswer extends Error {}

/**
 * Sends one request and resolves with the answer's first line, parsed; rejects
 * with a `NoAnswer` when there is none within `timeoutMillis` (a monotonic
 * timer), the connection fails, or the answer is over {@link MAX_ANSWER} or
 * not JSON.
 */
const ask = (path: string, request: Record<string, unknown>, timeoutMillis: number): Promise<unknown> =>
  new Promise((resolve, reject) => {
    const socket = Net.connect(path)
    const chunks: Array<Buffer> = []
    let size = 0
    const fail = (message: string) => {
      clearTimeout(timer)
      socket.destroy()
      reject(new NoAnswer(message))
    }
    const timer = setTimeout(
      () =>
        fail(
          `no answer from ${path} within ${Duration.format(Duration.millis(timeoutMillis))}` +
            (request["cmd"] === "status" ? "" : ` (the ${String(request["cmd"])} may still be under way)`) +
            "; --timeout <duration> waits longer"
        ),
      timeoutMillis
    )
    socket.once("error", (error: NodeJS.ErrnoException) =>
      fail(
        error.code === "EACCES"
          ? `no permission to use ${path} (it belongs to another user)`
          : `no prefork answers on ${path} (${error.code ?? error.message}): is it running, with --control there?`
      )
    )
    socket.once("connect", () => socket.write(`${JSON.stringify(request)}\n`))
    socket.on("data", (chunk: Buffer) => {
      const nl = chunk.indexOf(10)
      chunks.push(nl === -1 ? chunk : chunk.subarray(0, nl))
      size += nl === -1 ? chunk.length : nl
      if (size > MAX_ANSWER) return fail(`the answer on ${path} is longer than ${MAX_ANSWER} bytes`)
      if (nl === -1) return
      clearTimeout(timer)
      socket.destroy()
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString("utf8")))
      } catch {
        reject(new NoAnswer(`the answer on ${path} is not prefork's: not JSON`))
      }
    })
    socket.once("end", () => fail(`${path} closed the connection without an answer`))
  })

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

/** What is wrong with an answer to `cmd`, or undefined when it is one prefork gives. */
const malformed = (cmd: string, reply: unknown): string | undefined => {
  if (!isRecord(reply) || typeof reply["ok"] !== "boolean") return 'not {"ok": …}'
  if (reply["ok"] === false) return typeof reply["error"] === "string" ? undefined : "an error without a message"
  if (cmd === "status") {
    const workers = reply["workers"]
    const spares = reply["spares"] ?? []
    if (!Array.isArray(workers) || !workers.every(isRow)) return "no valid worker rows"
    if (!Array.isArray(spares) || !spares.every(isCount)) return "invalid spares"
  }
  if (cmd === "scale" && !isCount(reply["processes"])) return "no number of workers"
  return undefined
}

/** Takes `--name <value>` or `--name=<value>` out of `args`: the value, undefined if absent, or null if it has none. */
const takeFlag = (args: Array<string>, name: string): string | undefined | null => {
  const at = args.findIndex((a) => a === name || a.startsWith(`${name}=`))
  if (at === -1) return undefined
  const arg = args[at]!
  const inline = arg.includes("=")
  const value = inline ? arg.slice(arg.indexOf("=") + 1) : args[at + 1]
  args.splice(at, inline ? 1 : 2)
  return value === undefined || value === "" ? null : value
}

/**
 * Runs `prefork ctl <argv>`; resolves with the exit code ({@link ExitCode}).
 *
 * @since 0.1.0
 * @category running
 */
export const main = async (
  argv: ReadonlyArray<string>,
  out: NodeJS.WritableStream = process.stdout,
  err: NodeJS.WritableStream = process.stderr
): Promise<number> => {
  const args = [...argv]
  const control = takeFlag(args, "--control")
  if (control === null) {
    err.write(`prefork ctl: --control needs a path\n${USAGE}`)
    return ExitCode.USAGE
  }
  const timeoutText = takeFlag(args, "--timeout")
  const timeout = timeoutText === undefined ? Option.none() : parsePositiveDuration(timeoutText ?? "")
  if (timeoutText !== undefined && Option.isNone(timeout)) {
    err.write(`prefork ctl: --timeout needs a duration > 0 (10s, 2m), got ${timeoutText ?? "nothing"}\n${USAGE}`)
    return ExitCode.USAGE
  }
  const path = control ?? process.env["PREFORK_CONTROL"] ?? RuntimeDir.defaultPath()
  const [cmd, arg, ...rest] = args
  const whole = (text: string | undefined) =>
    text !== undefined && /^\d+$/.test(text) && Number.isSafeInteger(Number(text)) ? Number(text) : undefined
  let request: Record<string, unknown>
  if (cmd === "status" && arg === undefined) request = { cmd }
  else if (cmd === "reload" && arg === undefined) request = { cmd }
  else if (cmd === "restart" && whole(arg) !== undefined && rest.length === 0) request = { cmd, task: whole(arg) }
  else if (cmd === "scale" && whole(arg) !== undefined && rest.length === 0) request = { cmd, processes: whole(arg) }
  else {
    err.write(
      `${cmd === undefined || cmd === "--help" || cmd === "-h" ? "" : `prefork ctl: unexpected ${args.join(" ")}\n`}${USAGE}`
    )
    return cmd === "--help" || cmd === "-h" ? ExitCode.OK : ExitCode.USAGE
  }
  // Only a socket of ours, in a directory nobody else controls: anything else may be someone's trap.
  const real = RuntimeDir.resolve(path, { create: false })
  const socket = typeof real === "string" ? RuntimeDir.checkSocket(real) : real
  if (socket instanceof RuntimeDir.UntrustedPath) {
    err.write(`prefork ctl: ${socket.message}\n`)
    return ExitCode.UNTRUSTED
  }
  if (socket instanceof RuntimeDir.Missing || typeof real !== "string") {
    err.write(`prefork ctl: no prefork answers on ${path} (it does not exist): is it running, with --control there?\n`)
    return ExitCode.NO_ANSWER
  }
  let reply: unknown
  try {
    const millis = Duration.toMillis(
      Option.getOrElse(timeout, () => (cmd === "status" ? STATUS_TIMEOUT : CHANGE_TIMEOUT))
    )
    reply = await ask(real, request, millis)
  } catch (error) {
    err.write(`prefork ctl: ${error instanceof Error ? error.message : String(error)}\n`)
    return ExitCode.NO_ANSWER
  }
  const wrong = malformed(cmd, reply)
  if (wrong !== undefined || !isRecord(reply)) {
    err.write(`prefork ctl: the answer on ${path} is not prefork's: ${wrong ?? "not an object"}\n`)
    return ExitCode.NO_ANSWER
  }
  if (reply["ok"] !== true) {
    err.write(`prefork ctl: ${String(reply["error"])}\n`)
    return ExitCode.FAILED
  }
  if (cmd === "status") {
    out.write(`${table(reply["workers"] as ReadonlyArray<StatusRow>)}\n`)
    const spares = (reply["spares"] ?? []) as ReadonlyArray<number>
    if (spares.length > 0) out.write(`spares: ${spares.join(", ")}\n`)
  } else if (cmd === "scale") out.write(`${String(reply["processes"])} workers\n`)
  else out.write("done\n")
  return ExitCode.OK
}
