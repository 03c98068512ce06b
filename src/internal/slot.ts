/**
 * One task slot's life as a small state machine whose transitions are data,
 * and the table of all slots with the counts the supervisor waits on.
 *
 *   starting ──Ready──▶ running
 *      │                  │
 *      └──────Exited──────┴──▶ restarting ──Spawned──▶ starting
 *                         └──▶ exited                    (normal exit, not restarted)
 *   any live state ──Stopping──▶ stopping ──Stopped──▶ stopped (or removed, when scaled away)
 *
 * Everything here is pure: the loop keeps the table in a `SubscriptionRef`
 * and applies transitions to it, and whoever waits (`awaitReady`, `scale`)
 * waits for a table that satisfies a predicate. Only a slot's own fiber
 * replaces its worker: others ask through its mailbox (`mailbox.ts`).
 */
import * as HashMap from "effect/HashMap"
import * as Option from "effect/Option"
import type { ExitStatus } from "../ExitStatus.ts"
import type { SlotStatus } from "../Model.ts"
import { TaskId } from "../TaskId.ts"

/** @internal */
export type Phase = SlotStatus["state"]

/** @internal */
export interface Slot {
  readonly taskId: TaskId
  readonly phase: Phase
  /** How many workers this slot has spawned; the live one, if any, is number `incarnation`. */
  readonly incarnation: number
  readonly pid: Option.Option<number>
  readonly restarts: number
  readonly startedAt: Option.Option<number>
  readonly lastExit: Option.Option<ExitStatus>
  /** Scaled away: the slot leaves the table once its worker is gone. */
  readonly removing: boolean
  /** A replacement started by a surge reload, not serving yet: the slot's worker until it is ready. */
  readonly replacement: Option.Option<number>
}

/** @internal */
export type Transition =
  | { readonly _tag: "Spawned"; readonly pid: number; readonly at: number }
  /** A surge reload started a replacement beside the live worker. */
  | { readonly _tag: "Surging"; readonly pid: number }
  /** The replacement is ready and takes the slot over: it is the slot's next incarnation. */
  | { readonly _tag: "TookOver"; readonly pid: number; readonly at: number }
  /** The replacement failed (not ready, exited, stopped): the live worker stays. */
  | { readonly _tag: "SurgeFailed" }
  | { readonly _tag: "Ready" }
  /** The worker exited; `restart` says whether the slot starts again. */
  | { readonly _tag: "Exited"; readonly status: ExitStatus; readonly restart: boolean }
  /** A restart of a failure, spending budget (requested restarts do not count). */
  | { readonly _tag: "Counted" }
  /** The supervisor stops this slot for good; `remove` when it is scaled away. */
  | { readonly _tag: "Stopping"; readonly remove: boolean }
  | { readonly _tag: "Stopped" }

const isFinal = (phase: Phase): boolean => phase === "exited" || phase === "stopped"

/** @internal */
export const transition = (slot: Slot, t: Transition): Slot => {
  switch (t._tag) {
    case "Spawned":
      return isFinal(slot.phase) || slot.phase === "stopping"
        ? slot
        : {
            ...slot,
            phase: "starting",
            incarnation: slot.incarnation + 1,
            pid: Option.some(t.pid),
            startedAt: Option.some(t.at)
          }
    case "Surging":
      return { ...slot, replacement: Option.some(t.pid) }
    case "TookOver":
      return {
        ...slot,
        phase: slot.phase === "stopping" ? "stopping" : "running",
        incarnation: slot.incarnation + 1,
        pid: Option.some(t.pid),
        startedAt: Option.some(t.at),
        replacement: Option.none()
      }
    case "SurgeFailed":
      return { ...slot, replacement: Option.none() }
    case "Ready":
      return slot.phase === "starting" && Option.isSome(slot.pid) ? { ...slot, phase: "running" } : slot
    case "Exited":
      return {
        ...slot,
        phase: slot.phase === "stopping" ? "stopping" : t.restart ? "restarting" : "exited",
        pid: Option.none(),
        lastExit: Option.some(t.status)
      }
    case "Counted":
      return { ...slot, restarts: slot.restarts + 1 }
    case "Stopping":
      return isFinal(slot.phase) && !t.remove
        ? slot
        : { ...slot, phase: "stopping", removing: slot.removing || t.remove }
    case "Stopped":
      // A stop is not the worker's own exit: `lastExit` keeps the last one it made by itself.
      return { ...slot, phase: slot.phase === "exited" ? "exited" : "stopped", pid: Option.none() }
  }
}

/** @internal */
export const newSlot = (taskId: number): Slot => ({
  taskId: TaskId(taskId),
  phase: "starting",
  incarnation: 0,
  pid: Option.none(),
  restarts: 0,
  startedAt: Option.none(),
  lastExit: Option.none(),
  removing: false,
  replacement: Option.none()
})

/** @internal */
export const status = (slot: Slot): SlotStatus => ({
  taskId: slot.taskId,
  state: slot.phase,
  pid: slot.pid,
  restarts: slot.restarts,
  startedAt: slot.startedAt,
  lastExit: slot.lastExit,
  replacement: slot.replacement
})

/**
 * Every slot by task id, with the counts kept as the slots change so that
 * "is every slot ready?" costs nothing however many slots there are.
 *
 * @internal
 */
export interface Table {
  readonly slots: HashMap.HashMap<number, Slot>
  /** Slots whose worker is ready now. */
  readonly running: number
  /** How many slots are in each phase (for the `prefork.workers` gauge). */
  readonly counts: Readonly<Record<Phase, number>>
  /** Slots not being scaled away: the number of processes asked for. */
  readonly target: number
  /** Slots being scaled away that have not left yet. */
  readonly removing: number
  /** The supervision is ending: nothing starts again. */
  readonly closed: boolean
}

/** @internal */
export const makeTable = (processes: number): Table => ({
  slots: HashMap.make(...Array.from({ length: processes }, (_, i) => [i, newSlot(i)] as const)),
  running: 0,
  counts: { ...NO_COUNTS, starting: processes },
  target: processes,
  removing: 0,
  closed: false
})

const NO_COUNTS: Readonly<Record<Phase, number>> = {
  starting: 0,
  running: 0,
  restarting: 0,
  stopping: 0,
  exited: 0,
  stopped: 0
}

const count = (counts: Readonly<Record<Phase, number>>, phase: Phase, n: number): Readonly<Record<Phase, number>> => ({
  ...counts,
  [phase]: counts[phase] + n
})

const replace = (table: Table, before: Slot, after: Slot): Table =>
  before === after
    ? table
    : {
        ...table,
        slots: HashMap.set(table.slots, after.taskId, after),
        counts:
          before.phase === after.phase ? table.counts : count(count(table.counts, before.phase, -1), after.phase, 1),
        running: table.running + (after.phase === "running" ? 1 : 0) - (before.phase === "running" ? 1 : 0),
        target: table.target - (after.removing && !before.removing ? 1 : 0),
        removing: table.removing + (after.removing && !before.removing ? 1 : 0)
      }

/** @internal */
export const update = (table: Table, taskId: number, t: Transition): Table => {
  const before = HashMap.get(table.slots, taskId)
  return Option.isNone(before) ? table : replace(table, before.value, transition(before.value, t))
}

/** @internal */
export const get = (table: Table, taskId: number): Option.Option<Slot> => HashMap.get(table.slots, taskId)

/** Adds slots `target … processes-1`. @internal */
export const grow = (table: Table, processes: number): Table => {
  let slots = table.slots
  for (let i = table.target; i < processes; i++) slots = HashMap.set(slots, i, newSlot(i))
  return { ...table, slots, target: processes, counts: count(table.counts, "starting", processes - table.target) }
}

/** A slot scaled away whose worker is gone leaves the table. @internal */
export const drop = (table: Table, taskId: number): Table => {
  const slot = HashMap.get(table.slots, taskId)
  if (Option.isNone(slot)) return table
  return {
    ...table,
    slots: HashMap.remove(table.slots, taskId),
    counts: count(table.counts, slot.value.phase, -1),
    running: table.running - (slot.value.phase === "running" ? 1 : 0),
    removing: table.removing - (slot.value.removing ? 1 : 0),
    target: table.target - (slot.value.removing ? 0 : 1)
  }
}

/** Every slot ready at the same moment. @internal */
export const allRunning = (table: Table): boolean => table.running === table.target

/** The slots in task id order. @internal */
export const list = (table: Table): ReadonlyArray<Slot> =>
  Array.from(HashMap.values(table.slots)).sort((a, b) => a.taskId - b.taskId)
