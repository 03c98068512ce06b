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
 * default. Exit codes: 0 done; 1 prefork answered with an error; 2 bad usage;
 * 3 no prefork answers (not running, another path, or no permission).
 *
 * @since 0.1.0
 */
import * as Net from "node:net"
import * as Control from "./Control.ts"
import * as Status from "./Status.ts"

const USAGE = `Usage: prefork ctl [--control <path>] status | restart <task> | reload | scale <n>
Drives a running prefork through its control socket (default: ${Control.defaultPath()}).
`

const mib = (bytes: number | null) => (bytes === null ? "-" : `${(bytes / 1048576).toFixed(1)} MiB`)
const percent = (p: number | null) => (p === null ? "-" : `${p.toFixed(1)} %`)

/**
 * The status table of `prefork ctl status`, without a trailing newline.
 *
 * @since 0.1.0
 * @category formatting
 */
export const table = (rows: ReadonlyArray<Control.StatusRow>): string => {
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
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((cells) => cells[i]!.length)))
  return [header, ...body]
    .map((cells) => cells.map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i]! + 2))).join(""))
    .join("\n")
}

/** Sends one request and resolves with the answer, or rejects with why no prefork answered. */
const ask = (path: string, request: Record<string, unknown>): Promise<Record<string, unknown>> =>
  new Promise((resolve, reject) => {
    const socket = Net.connect(path)
    let data = ""
    socket.setEncoding("utf8")
    socket.once("error", (error: NodeJS.ErrnoException) =>
      reject(
        new Error(
          error.code === "EACCES"
            ? `no permission to use ${path} (it belongs to another user)`
            : `no prefork answers on ${path} (${error.code ?? error.message}): is it running, with --control there?`
        )
      )
    )
    socket.once("connect", () => socket.write(`${JSON.stringify(request)}\n`))
    socket.on("data", (chunk: string) => {
      data += chunk
      const nl = data.indexOf("\n")
      if (nl === -1) return
      socket.end()
      try {
        resolve(JSON.parse(data.slice(0, nl)) as Record<string, unknown>)
      } catch (error) {
        reject(error instanceof Error ? error : new Error(String(error)))
      }
    })
  })

/**
 * Runs `prefork ctl <argv>`; resolves with the exit code.
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
  let path = process.env["PREFORK_CONTROL"] ?? Control.defaultPath()
  const at = args.findIndex((a) => a === "--control" || a.startsWith("--control="))
  if (at !== -1) {
    const arg = args[at]!
    const value = arg.includes("=") ? arg.slice(arg.indexOf("=") + 1) : args[at + 1]
    if (value === undefined || value === "") {
      err.write(`prefork ctl: --control needs a path\n${USAGE}`)
      return 2
    }
    args.splice(at, arg.includes("=") ? 1 : 2)
    path = value
  }
  const [cmd, arg, ...rest] = args
  const whole = (text: string | undefined) => (text !== undefined && /^\d+$/.test(text) ? Number(text) : undefined)
  let request: Record<string, unknown>
  if (cmd === "status" && arg === undefined) request = { cmd }
  else if (cmd === "reload" && arg === undefined) request = { cmd }
  else if (cmd === "restart" && whole(arg) !== undefined && rest.length === 0) request = { cmd, task: whole(arg) }
  else if (cmd === "scale" && whole(arg) !== undefined && rest.length === 0) request = { cmd, processes: whole(arg) }
  else {
    err.write(
      `${cmd === undefined || cmd === "--help" || cmd === "-h" ? "" : `prefork ctl: unexpected ${args.join(" ")}\n`}${USAGE}`
    )
    return cmd === "--help" || cmd === "-h" ? 0 : 2
  }
  let reply: Record<string, unknown>
  try {
    reply = await ask(path, request)
  } catch (error) {
    err.write(`prefork ctl: ${error instanceof Error ? error.message : String(error)}\n`)
    return 3
  }
  if (reply["ok"] !== true) {
    err.write(`prefork ctl: ${String(reply["error"] ?? "failed")}\n`)
    return 1
  }
  if (cmd === "status") {
    out.write(`${table(reply["workers"] as ReadonlyArray<Control.StatusRow>)}\n`)
    const spares = (reply["spares"] ?? []) as ReadonlyArray<number>
    if (spares.length > 0) out.write(`spares: ${spares.join(", ")}\n`)
  } else if (cmd === "scale") out.write(`${String(reply["processes"])} workers\n`)
  else out.write("done\n")
  return 0
}
