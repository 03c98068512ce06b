/**
 * `prefork ctl top`: a live table of one prefork's workers, as `pm2 monit`
 * shows one — per worker its task id, pid, state, restarts, uptime, CPU % and
 * RSS — from the control socket's `status` (one shared `/proc` sample), every
 * `--interval` (1 s). On a terminal each frame is redrawn in place (the
 * screen cleared, the cursor hidden and shown again at the end, Ctrl-C
 * included); otherwise frames are appended, a blank line between two.
 * `--count n` stops after n frames. Also the status table of `prefork ctl
 * status`.
 *
 * @since 0.1.0
 */
import { columns } from "./Columns.ts"
import * as Client from "./ControlClient.ts"
import type { StatusRow } from "./ControlProtocol.ts"
import * as Status from "./Status.ts"

const mib = (bytes: number | null) => (bytes === null ? "-" : `${(bytes / 1048576).toFixed(1)} MiB`)
const percent = (p: number | null) => (p === null ? "-" : `${p.toFixed(1)} %`)

/**
 * The status table of `prefork ctl status` and `top`, without a trailing
 * newline.
 *
 * @since 0.1.0
 * @category formatting
 */
export const table = (rows: ReadonlyArray<StatusRow>): string =>
  columns(
    ["TASK", "PID", "STATE", "RESTARTS", "UPTIME", "CPU", "RSS", "LAST EXIT"],
    rows.map((row) => [
      String(row.task),
      row.pid === null ? "-" : String(row.pid),
      row.state,
      String(row.restarts),
      row.uptimeMillis === null ? "-" : Status.formatUptime(row.uptimeMillis),
      percent(row.cpuPercent),
      mib(row.rssBytes),
      row.lastExit ?? "-"
    ])
  )

/** ANSI: cursor home and clear the screen; hide and show the cursor. */
const CLEAR = "\x1b[H\x1b[2J"
const HIDE = "\x1b[?25l"
const SHOW = "\x1b[?25h"

/**
 * What `top` watches and how.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** The control socket. */
  readonly path: string
  /** What the title calls it (a name, or the path). */
  readonly label: string
  /** Between the starts of two frames. */
  readonly intervalMillis: number
  /** Frames to show, then exit 0; unbounded when undefined (until Ctrl-C). */
  readonly count: number | undefined
  /** The deadline of each `status` request. */
  readonly timeoutMillis: number
  readonly out: NodeJS.WritableStream & { readonly isTTY?: boolean | undefined }
  readonly err: NodeJS.WritableStream
}

/**
 * Shows frames until `count` is reached, Ctrl-C (exit 0), or prefork stops
 * answering (exit 3, said on stderr). Resolves with the exit code.
 *
 * @since 0.1.0
 * @category running
 */
export const run = (options: Options): Promise<number> =>
  new Promise((resolve) => {
    const tty = options.out.isTTY === true
    let frames = 0
    let timer: ReturnType<typeof setTimeout> | undefined
    let done = false
    const finish = (code: number) => {
      if (done) return
      done = true
      if (timer !== undefined) clearTimeout(timer)
      process.off("SIGINT", onInterrupt)
      if (tty) options.out.write(SHOW)
      resolve(code)
    }
    const onInterrupt = () => {
      if (tty) options.out.write("\n")
      finish(0)
    }
    process.on("SIGINT", onInterrupt)
    if (tty) options.out.write(HIDE)
    const frame = () => {
      const started = performance.now()
      Client.ask(options.path, { cmd: "status" }, options.timeoutMillis).then(
        (reply) => {
          if (done) return
          const wrong = Client.malformed("status", reply)
          if (wrong !== undefined) {
            options.err.write(`prefork ctl: the answer on ${options.path} is not prefork's: ${wrong}\n`)
            return finish(3)
          }
          const body = reply as { readonly ok: boolean; readonly error?: string; readonly workers?: unknown }
          if (body.ok !== true) {
            options.err.write(`prefork ctl: ${String(body.error)}\n`)
            return finish(1)
          }
          const rows = body.workers as ReadonlyArray<StatusRow>
          const running = rows.filter((r) => r.state === "running").length
          const title = `${options.label}: ${running}/${rows.length} running, ${new Date().toLocaleTimeString()}${tty ? " (Ctrl-C to quit)" : ""}`
          options.out.write(`${tty ? CLEAR : frames > 0 ? "\n" : ""}${title}\n${table(rows)}\n`)
          frames++
          if (options.count !== undefined && frames >= options.count) return finish(0)
          timer = setTimeout(frame, Math.max(0, options.intervalMillis - (performance.now() - started)))
        },
        (error: unknown) => {
          if (done) return
          options.err.write(`prefork ctl: ${error instanceof Error ? error.message : String(error)}\n`)
          finish(3)
        }
      )
    }
    frame()
  })
