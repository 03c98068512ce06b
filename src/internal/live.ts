/**
 * Every process a supervisor has started and not yet let go: slot workers,
 * surge replacements, old workers being stopped, spares booted, taken or being
 * stopped. A process is listed from its spawn until its release has run (the
 * spawner's stop: its leader reaped and its process group empty), whoever holds
 * it then; so a process being stopped is never out of sight. Wrapping the
 * spawner is the whole mechanism: nothing else records a pid, and a reader
 * (the CLI's second Ctrl-C, a view) reads the list when it needs it.
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type { ProcessHandle, ProcessSpawner, Signal } from "../ProcessSpawner.ts"
import type { TaskId } from "../TaskId.ts"

/**
 * One process the supervisor still has: its task id, or none for a spare not
 * given one (booting, waiting, or being stopped).
 *
 * @internal
 */
export interface LiveProcess {
  readonly pid: number
  readonly taskId: Option.Option<TaskId>
}

/** @internal */
export interface Live {
  /** The spawner to use: each process it starts is listed until it is released. */
  readonly spawner: ProcessSpawner["Service"]
  /** The processes listed now, in the order they were started. */
  readonly list: Effect.Effect<ReadonlyArray<LiveProcess>>
  /**
   * Sends `signal` to each listed process whose leader is not reaped yet (its
   * whole group, see `ProcessHandle.kill`), and says which.
   */
  readonly signal: (signal: Signal) => Effect.Effect<ReadonlyArray<LiveProcess>>
}

interface Entry {
  readonly handle: ProcessHandle
  spare: boolean
}

const describe = (entry: Entry): LiveProcess => ({
  pid: entry.handle.pid,
  taskId: entry.spare ? Option.none() : Option.some(entry.handle.taskId)
})

/** The handle as it is, except that `activate` marks the entry as no longer a spare first. */
const activating = (entry: Entry): ProcessHandle => {
  const { handle } = entry
  return Object.create(Object.getPrototypeOf(handle), {
    ...Object.getOwnPropertyDescriptors(handle),
    activate: {
      enumerable: true,
      value: (taskId: TaskId) =>
        Effect.andThen(
          Effect.sync(() => {
            entry.spare = false
          }),
          handle.activate(taskId)
        )
    }
  }) as ProcessHandle
}

/**
 * Wraps `spawner` so that every process it starts is listed until released.
 *
 * @internal
 */
export const track = (spawner: ProcessSpawner["Service"]): Live => {
  const entries = new Set<Entry>()
  const spawn: ProcessSpawner["Service"]["spawn"] = (request) =>
    Effect.gen(function* () {
      const listed: Array<Entry> = []
      // Added before the spawn, so it runs after the spawner's release (a scope runs its finalizers last first).
      yield* Effect.addFinalizer(() => Effect.sync(() => listed.forEach((entry) => entries.delete(entry))))
      const handle = yield* spawner.spawn(request)
      const entry: Entry = { handle, spare: request.spare === true }
      listed.push(entry)
      entries.add(entry)
      return entry.spare ? activating(entry) : handle
    })
  const list = Effect.sync(() => Array.from(entries, describe))
  const signal = (signal: Signal) =>
    Effect.suspend(() => {
      const now = Array.from(entries)
      return Effect.forEach(now, (entry) =>
        Effect.flatMap(entry.handle.exitStatus, (status) =>
          Option.isSome(status)
            ? Effect.succeed(Option.none())
            : Effect.as(entry.handle.kill(signal), Option.some(entry))
        )
      ).pipe(Effect.map((signaled) => signaled.flatMap((e) => (Option.isSome(e) ? [describe(e.value)] : []))))
    })
  return { spawner: { ...spawner, spawn }, list, signal }
}
