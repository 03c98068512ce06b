/**
 * `prefork ctl`: running preforks, driven from another terminal through their
 * control sockets (see `Control.ts`).
 *
 * ```
 * prefork ctl ls [--json]       every prefork of this user: name, pid, workers ready/wanted, uptime, command
 * prefork ctl status            the workers: pid, state, restarts, uptime, CPU %, RSS, last exit
 * prefork ctl restart <task>    stop one worker and start it again (no budget spent)
 * prefork ctl reload            a rolling reload that loses nothing (as SIGHUP)
 * prefork ctl scale <n>         n workers
 * prefork ctl stop              a graceful stop (as SIGTERM); waits until prefork has exited
 * prefork ctl top               a live table of the workers (--interval 1s, --count n)
 * ```
 *
 * Which prefork: `-n <name>` (`--name`), or `--control <path>` (or
 * `PREFORK_CONTROL`); with neither, the one prefork of this user that runs,
 * and a usage error naming them when several do. `--timeout <duration>`
 * bounds the wait for the answer (default 10 s for `status`, `top` and `ls`'s
 * look-ups, 2 s each for `ls`, 10 min for the others, which answer once the
 * workers have changed). Before connecting, the socket and its directory are
 * checked as prefork checks them (`RuntimeDir.ts`): a socket another user
 * could have put there is never talked to. Exit codes: 0 done; 1 prefork
 * answered with an error; 2 bad usage (several preforks and no `-n`); 3 no
 * prefork answers (not running, another path, no permission, no answer in
 * time, or an answer that is not prefork's); 4 the socket or its directory
 * is not trusted.
 *
 * @since 0.1.0
 */
import { readFileSync } from "node:fs"
import * as Duration from "effect/Duration"
import * as Option from "effect/Option"
import { parsePositiveDuration } from "./Argv.ts"
import * as Client from "./ControlClient.ts"
import type { StatusRow } from "./ControlProtocol.ts"
import * as Instances from "./Instances.ts"
import * as Names from "./Names.ts"
import * as RuntimeDir from "./RuntimeDir.ts"
import * as Top from "./Top.ts"

const USAGE = `Usage: prefork ctl [-n <name> | --control <path>] [--timeout <duration>] <command>
  ls [--json]          every prefork of this user: name, pid, workers ready/wanted, uptime, command
  status               the workers: pid, state, restarts, uptime, CPU %, RSS, last exit
  restart <task>       stop one worker and start it again (no budget spent)
  reload               a rolling reload that loses nothing (as SIGHUP)
  scale <n>            n workers
  stop                 stop every worker gracefully (as SIGTERM) and wait until prefork has exited
  top [--interval <duration>] [--count <n>]
                       a live table of the workers, every second; Ctrl-C to quit
Without -n or --control: the one prefork of this user that runs (prefork ctl ls lists them).
Control sockets: ${RuntimeDir.defaultDir().dir}/<name>.sock.
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
export const MAX_ANSWER: number = Client.MAX_ANSWER

/**
 * The status table of `prefork ctl status` (see `Top.table`).
 *
 * @since 0.1.0
 * @category formatting
 */
export const table: (rows: ReadonlyArray<StatusRow>) => string = Top.table

const STATUS_TIMEOUT = Duration.seconds(10)
const LOOKUP_TIMEOUT = Duration.seconds(2)
const CHANGE_TIMEOUT = Duration.minutes(10)

/** Takes `--name <value>` or `--name=<value>` out of `args`: the value, undefined if absent, or null if it has none. */
const takeFlag = (args: Array<string>, ...names: ReadonlyArray<string>): string | undefined | null => {
  const at = args.findIndex((a) => names.some((name) => a === name || a.startsWith(`${name}=`)))
  if (at === -1) return undefined
  const arg = args[at]!
  const inline = !names.includes(arg)
  const value = inline ? arg.slice(arg.indexOf("=") + 1) : args[at + 1]
  args.splice(at, inline ? 1 : 2)
  return value === undefined || value === "" ? null : value
}

/** Takes a boolean `--flag` out of `args`: whether it was there. */
const takeSwitch = (args: Array<string>, name: string): boolean => {
  const at = args.indexOf(name)
  if (at !== -1) args.splice(at, 1)
  return at !== -1
}

const whole = (text: string | undefined) =>
  text !== undefined && /^\d+$/.test(text) && Number.isSafeInteger(Number(text)) ? Number(text) : undefined

/** A usage error: the exit code, said on stderr with the usage. */
class Usage {
  readonly message: string
  constructor(message: string) {
    this.message = message
  }
}

/** The request a command sends, or a {@link Usage} error. */
const toRequest = (cmd: string | undefined, arg: string | undefined, rest: ReadonlyArray<string>) => {
  const none = arg === undefined && rest.length === 0
  if ((cmd === "status" || cmd === "reload" || cmd === "stop") && none) return { cmd }
  if (cmd === "restart" && whole(arg) !== undefined && rest.length === 0) return { cmd, task: whole(arg) }
  if (cmd === "scale" && whole(arg) !== undefined && rest.length === 0) {
    return { cmd, processes: whole(arg) }
  }
  return undefined
}

/**
 * The socket to talk to: `-n`'s, `--control`'s, or the one prefork running;
 * else the exit code, said on `err`.
 */
const target = async (
  name: string | undefined,
  control: string | undefined,
  err: NodeJS.WritableStream
): Promise<{ readonly path: string; readonly label: string } | number> => {
  if (control !== undefined) return { path: control, label: control }
  if (name !== undefined) return { path: Names.socketPath(name), label: name }
  const survey = await Instances.survey(Duration.toMillis(LOOKUP_TIMEOUT))
  if (survey instanceof RuntimeDir.UntrustedPath) {
    err.write(`prefork ctl: ${survey.message}\n`)
    return ExitCode.UNTRUSTED
  }
  const running = survey.found.filter((f) => f.state === "running")
  if (running.length === 1) return { path: running[0]!.path, label: running[0]!.name }
  if (running.length > 1) {
    err.write(
      `prefork ctl: several preforks run: ${running.map((f) => f.name).join(", ")}; choose one with -n <name> (prefork ctl ls lists them)\n`
    )
    return ExitCode.USAGE
  }
  err.write(`prefork ctl: no prefork runs (no control socket answers in ${survey.dir})\n`)
  return ExitCode.NO_ANSWER
}

/** Whether a process with this pid runs: it exists and, where `/proc` says, is not a zombie waiting to be reaped. */
const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EPERM") return false
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "latin1")
    return stat[stat.lastIndexOf(")") + 2] !== "Z"
  } catch {
    return process.platform !== "linux"
  }
}

/** Waits until `pid` is gone, polling every 20 ms, for at most `millis`: whether it went. */
const gone = async (pid: number, millis: number): Promise<boolean> => {
  const deadline = performance.now() + millis
  while (alive(pid)) {
    if (performance.now() >= deadline) return false
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  return true
}

/** `prefork ctl ls`. */
const ls = async (json: boolean, timeoutMillis: number, out: NodeJS.WritableStream, err: NodeJS.WritableStream) => {
  const survey = await Instances.survey(timeoutMillis)
  if (survey instanceof RuntimeDir.UntrustedPath) {
    err.write(`prefork ctl: ${survey.message}\n`)
    return ExitCode.UNTRUSTED
  }
  for (const { entry, reason } of survey.skipped) err.write(`prefork ctl: skipped ${entry}: ${reason}\n`)
  if (survey.more > 0) err.write(`prefork ctl: ${survey.more} more sockets not asked (at most ${Names.MAX_LISTED})\n`)
  out.write(`${json ? Instances.json(survey.found) : Instances.table(survey.found)}\n`)
  return ExitCode.OK
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
  try {
    const control = takeFlag(args, "--control")
    if (control === null) throw new Usage("--control needs a path")
    const name = takeFlag(args, "--name", "-n")
    if (name === null) throw new Usage("-n needs a name")
    if (name !== undefined && Names.invalid(name) !== undefined) throw new Usage(`-n: ${Names.invalid(name)}`)
    if (name !== undefined && control !== undefined) throw new Usage("-n and --control name two sockets: give one")
    const duration = (flag: string) => {
      const text = takeFlag(args, flag)
      if (text === undefined) return undefined
      const value = parsePositiveDuration(text ?? "")
      if (Option.isNone(value)) throw new Usage(`${flag} needs a duration > 0 (10s, 2m), got ${text ?? "nothing"}`)
      return Duration.toMillis(value.value)
    }
    const timeout = duration("--timeout")
    const [cmd, arg, ...rest] = args
    if (cmd === undefined || cmd === "--help" || cmd === "-h") {
      err.write(USAGE)
      return cmd === undefined ? ExitCode.USAGE : ExitCode.OK
    }
    if (cmd === "ls") {
      const json = takeSwitch(args, "--json")
      if (args.length > 1) throw new Usage(`unexpected ${args.slice(1).join(" ")}`)
      return await ls(json, timeout ?? Duration.toMillis(LOOKUP_TIMEOUT), out, err)
    }
    let top: { readonly intervalMillis: number; readonly count: number | undefined } | undefined
    if (cmd === "top") {
      const intervalMillis = duration("--interval") ?? 1_000
      const countText = takeFlag(args, "--count")
      const count = countText === undefined ? undefined : whole(countText ?? "")
      if (countText !== undefined && (count === undefined || count < 1)) {
        throw new Usage(`--count needs a whole number >= 1, got ${countText ?? "nothing"}`)
      }
      if (args.length > 1) throw new Usage(`unexpected ${args.slice(1).join(" ")}`)
      top = { intervalMillis, count }
    }
    const request = top === undefined ? toRequest(cmd, arg, rest) : { cmd: "status" }
    if (request === undefined) throw new Usage(`unexpected ${args.join(" ")}`)
    const where = await target(name, control ?? (name === undefined ? process.env["PREFORK_CONTROL"] : undefined), err)
    if (typeof where === "number") return where
    // Only a socket of ours, in a directory nobody else controls: anything else may be someone's trap.
    const real = RuntimeDir.resolve(where.path, { create: false })
    const socket = typeof real === "string" ? RuntimeDir.checkSocket(real) : real
    if (socket instanceof RuntimeDir.UntrustedPath) {
      err.write(`prefork ctl: ${socket.message}\n`)
      return ExitCode.UNTRUSTED
    }
    if (socket instanceof RuntimeDir.Missing || typeof real !== "string") {
      err.write(
        name === undefined
          ? `prefork ctl: no prefork answers on ${where.path} (it does not exist): is it running, with --control there?\n`
          : `prefork ctl: no prefork named ${name} runs (prefork ctl ls lists those that do)\n`
      )
      return ExitCode.NO_ANSWER
    }
    if (top !== undefined) {
      const timeoutMillis = timeout ?? Duration.toMillis(STATUS_TIMEOUT)
      return await Top.run({ path: real, label: where.label, ...top, timeoutMillis, out, err })
    }
    return await send(real, where.path, request, timeout, out, err)
  } catch (error) {
    if (!(error instanceof Usage)) throw error
    err.write(`prefork ctl: ${error.message}\n${USAGE}`)
    return ExitCode.USAGE
  }
}

/** Sends one request to the socket at `real` (`shown` in messages) and prints its answer. */
const send = async (
  real: string,
  shown: string,
  request: Record<string, unknown>,
  timeout: number | undefined,
  out: NodeJS.WritableStream,
  err: NodeJS.WritableStream
): Promise<number> => {
  const cmd = String(request["cmd"])
  const millis = timeout ?? Duration.toMillis(cmd === "status" ? STATUS_TIMEOUT : CHANGE_TIMEOUT)
  const started = performance.now()
  let reply: unknown
  try {
    // A stop is answered at once; the connection closes when prefork does.
    reply = await (cmd === "stop" ? Client.askAndAwaitClose : Client.ask)(real, request, millis)
  } catch (error) {
    err.write(`prefork ctl: ${error instanceof Error ? error.message : String(error)}\n`)
    return ExitCode.NO_ANSWER
  }
  const wrong = Client.malformed(cmd, reply)
  const body = reply as Record<string, unknown>
  if (wrong !== undefined) {
    err.write(`prefork ctl: the answer on ${shown} is not prefork's: ${wrong}\n`)
    return ExitCode.NO_ANSWER
  }
  if (body["ok"] !== true) {
    err.write(`prefork ctl: ${String(body["error"])}\n`)
    return ExitCode.FAILED
  }
  if (cmd === "stop") {
    const pid = body["pid"] as number
    if (!(await gone(pid, Math.max(0, millis - (performance.now() - started))))) {
      err.write(`prefork ctl: prefork pid ${pid} is still stopping after ${Duration.format(Duration.millis(millis))}\n`)
      return ExitCode.NO_ANSWER
    }
    out.write(`stopped (pid ${pid})\n`)
  } else if (cmd === "status") {
    out.write(`${table(body["workers"] as ReadonlyArray<StatusRow>)}\n`)
    const spares = (body["spares"] ?? []) as ReadonlyArray<number>
    if (spares.length > 0) out.write(`spares: ${spares.join(", ")}\n`)
  } else if (cmd === "scale") out.write(`${String(body["processes"])} workers\n`)
  else out.write("done\n")
  return ExitCode.OK
}
