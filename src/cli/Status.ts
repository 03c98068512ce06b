/**
 * The status table `prefork` prints on SIGUSR2: one row per task slot with
 * its pid, state, restarts, uptime and last exit.
 *
 * ```
 * TASK  PID    STATE       RESTARTS  UPTIME  LAST EXIT
 * 0     41523  running     0         1m05s   -
 * 1     41602  running     2         12.4s   code 1
 * 2     -      restarting  3         -       SIGKILL
 * ```
 *
 * Below it, the spares waiting for a task id, and every other process the
 * supervisor still has (a spare or a replaced worker being stopped): one is
 * shown until it is reaped.
 *
 * @since 0.1.0
 */
import * as Option from "effect/Option"
import type { LiveProcess, SlotStatus } from "../Supervisor.ts"
import { columns } from "./Columns.ts"

/**
 * One slot, as plain data: what the table shows, for structured logs.
 *
 * @since 0.1.0
 * @category models
 */
export interface Row {
  readonly task: number
  readonly pid: number | null
  readonly state: SlotStatus["state"]
  readonly restarts: number
  /** Milliseconds since the current worker started, while it runs. */
  readonly uptimeMillis: number | null
  /** `"code 1"`, `"SIGKILL"`, or null before any exit. */
  readonly lastExit: string | null
}

/**
 * @since 0.1.0
 * @category constructors
 */
export const rows = (slots: ReadonlyArray<SlotStatus>, now: number): ReadonlyArray<Row> =>
  slots.map((slot) => ({
    task: slot.taskId,
    pid: Option.getOrNull(slot.pid),
    state: slot.state,
    restarts: slot.restarts,
    uptimeMillis:
      Option.isSome(slot.pid) && Option.isSome(slot.startedAt) ? Math.max(0, now - slot.startedAt.value) : null,
    lastExit: Option.match(slot.lastExit, {
      onNone: () => null,
      onSome: (status) => (status._tag === "Exited" ? `code ${status.code}` : status.signal)
    })
  }))

/**
 * An uptime as a person reads it: `850ms`, `12.4s`, `3m05s`, `2h07m`, `3d04h`.
 *
 * @since 0.1.0
 * @category formatting
 */
export const formatUptime = (ms: number): string => {
  if (ms < 1000) return `${Math.floor(ms)}ms`
  if (ms < 60_000) return `${(Math.floor(ms / 100) / 10).toFixed(1)}s`
  const s = Math.floor(ms / 1000)
  const two = (n: number) => String(n).padStart(2, "0")
  if (s < 3600) return `${Math.floor(s / 60)}m${two(s % 60)}s`
  if (s < 86_400) return `${Math.floor(s / 3600)}h${two(Math.floor(s / 60) % 60)}m`
  return `${Math.floor(s / 86_400)}d${two(Math.floor(s / 3600) % 24)}h`
}

/**
 * The table, without a trailing newline.
 *
 * @since 0.1.0
 * @category formatting
 */
export const table = (slots: ReadonlyArray<SlotStatus>, now: number): string => {
  const header = ["TASK", "PID", "STATE", "RESTARTS", "UPTIME", "LAST EXIT"]
  const body = rows(slots, now).map((row) => [
    String(row.task),
    row.pid === null ? "-" : String(row.pid),
    row.state,
    String(row.restarts),
    row.uptimeMillis === null ? "-" : formatUptime(row.uptimeMillis),
    row.lastExit ?? "-"
  ])
  return columns(header, body)
}

/**
 * A process as the log names it: `child 2 (pid 4242)`, or `spare (pid 4243)`
 * for a spare not given a task id.
 *
 * @since 0.1.0
 * @category formatting
 */
export const processName = (p: LiveProcess): string =>
  `${Option.match(p.taskId, { onNone: () => "spare", onSome: (id) => `child ${id}` })} (pid ${p.pid})`

/**
 * The processes of `live` that neither the table (a slot's worker or
 * replacement) nor the spares show: the ones being stopped (a spare, a
 * worker replaced or scaled away), until they are reaped.
 *
 * @since 0.1.0
 * @category constructors
 */
export const unlisted = (
  slots: ReadonlyArray<SlotStatus>,
  spares: ReadonlyArray<number>,
  live: ReadonlyArray<LiveProcess>
): ReadonlyArray<LiveProcess> => {
  const shown = new Set(spares)
  for (const slot of slots) {
    if (Option.isSome(slot.pid)) shown.add(slot.pid.value)
    if (Option.isSome(slot.replacement)) shown.add(slot.replacement.value)
  }
  return live.filter((p) => !shown.has(p.pid))
}
