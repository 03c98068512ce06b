/**
 * What the Node spawners share: turning a `ChildProcess` just started into a
 * `ProcessHandle`, and the scoped release.
 *
 * - The exit is the leader's `'exit'` event, kept as data, and told (the
 *   handle's `exit`, and its `stop`) once the worker's piped output has been
 *   delivered: a crash's last words come before the news of its death. That
 *   wait is bounded: `DRAIN_TIMEOUT` spent waiting for bytes from a pipe that
 *   something outside the worker holds open (see `Output.Reader.finish`),
 *   `LAST_WORDS_TIMEOUT` in all for a sink that does not complete, and only
 *   `DRAIN_TIMEOUT` after a stop. The handle's `exitStatus` has it at once.
 * - The worker is its whole process group when it leads one (`pgid`): the
 *   handle's `stop` signals the group and waits until the leader is reaped
 *   and no member is left, even after the leader exited by itself. A worker
 *   without a group of its own (a cluster worker where `setsid` is missing)
 *   is its one process.
 * - `kill` never signals anything once the leader has been reaped: its pid
 *   may have been reused.
 * - Readiness (also `"listening"` from the preload's message, see
 *   `drain.ts`), decoded IPC messages (the channel guarded: see `channel.ts`),
 *   heartbeats (IPC messages, or for a command any bytes on its heartbeat
 *   pipe), piped output line by line (see `output.ts`), and the watchdog's
 *   list (see `watchdog.ts`) are wired here, synchronously right after the
 *   spawn, so that no event of the child can come before its listener.
 * - A spare's task id changes when it is activated: the handle's `taskId`,
 *   log lines and output lines name the current one.
 */
import type { ChildProcess } from "node:child_process"
import type { Readable } from "node:stream"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import { SpawnFailed } from "../../Errors.ts"
import * as ExitStatus from "../../ExitStatus.ts"
import * as Messages from "../../Messages.ts"
import { type Diagnosis, makeStop, type ProcessHandle, type Signal, type SpawnRequest } from "../../ProcessSpawner.ts"
import type { TaskId } from "../../TaskId.ts"
import * as Channel from "./channel.ts"
import * as Group from "./group.ts"
import { signalAndCapture } from "./inspect.ts"
import * as Memory from "./memory.ts"
import * as Output from "./output.ts"
import type { Watch, When } from "./watchdog.ts"

/** @internal */
export interface Started {
  readonly handle: ProcessHandle
  /** Waits (bounded) for the last piped output, then stops reading and unlists the worker from the watchdog. */
  readonly close: Effect.Effect<void>
}

/**
 * How long the exit and the release wait for piped output after the leader's
 * exit, in case something outside it (a grandchild) holds the pipe open.
 */
const DRAIN_TIMEOUT = Duration.millis(500)

/** How long the exit waits at most for the worker's last lines to be delivered, however slow the sink. */
const LAST_WORDS_TIMEOUT = Duration.seconds(5)

/**
 * Calls `tell` once every reader has delivered what the exited worker wrote,
 * or after `LAST_WORDS_TIMEOUT` at the latest.
 */
const afterOutput = (readers: ReadonlyArray<Output.Reader>, tell: () => void): void => {
  let left = readers.length
  if (left === 0) return tell()
  const timer = setTimeout(tell, Duration.toMillis(LAST_WORDS_TIMEOUT)).unref()
  for (const reader of readers) {
    reader.finish(Duration.toMillis(DRAIN_TIMEOUT), () => {
      if (--left > 0) return
      clearTimeout(timer)
      tell()
    })
  }
}

/**
 * The `SpawnFailed` of a request. Its `code` tells a shortage (`EMFILE`,
 * `ENFILE`, `EAGAIN`, `ENOMEM`: `transient`, the supervisor retries) from a
 * spawn that can never work (`ENOENT`, `EACCES`, `E2BIG`, …).
 *
 * @internal
 */
export const failed = (request: SpawnRequest, code: string | undefined, message: string): SpawnFailed =>
  new SpawnFailed({
    taskId: request.taskId,
    command: request.command,
    message: `cannot start ${request.spare === true ? "a spare" : `child ${request.taskId}`} (${request.command}): ${message}`,
    ...(code === undefined ? {} : { code })
  })

/** @internal */
export const errorCode = (error: unknown): string | undefined =>
  typeof error === "object" && error !== null && "code" in error && typeof error.code === "string"
    ? error.code
    : undefined

/**
 * What a failed `spawn`'s error code means, for the codes a spawn can fail
 * with at run time. The first four are shortages, retried by the supervisor
 * (Node 24 reports `EMFILE`, `ENFILE` and `EAGAIN` as the child's `'error'`
 * event, `ENOMEM` as an exception thrown by `spawn`).
 */
const SPAWN_ERRORS: Record<string, string> = {
  EMFILE: "the primary has too many open files (ulimit -n)",
  ENFILE: "the system has too many open files (fs.file-max)",
  EAGAIN: "no more processes can be created now (ulimit -u, pids cgroup)",
  ENOMEM: "not enough memory to create a process",
  EACCES: "permission denied",
  ENOENT: "no such file",
  E2BIG: "the arguments and environment are too long"
}

/**
 * The reason a child failed to start, naming the code and what it means
 * rather than the wrapper (`setpriv`, `setsid`) Node reports as the program.
 *
 * @internal
 */
export const spawnError = (error: unknown): string => {
  const code = errorCode(error)
  const meaning = code === undefined ? undefined : SPAWN_ERRORS[code]
  return meaning === undefined ? String(error instanceof Error ? error.message : error) : `${code}: ${meaning}`
}

/** Logs the 1st, 10th, 100th … dropped message of a worker: bounded however many arrive. */
const isPowerOfTen = (n: number): boolean => {
  while (n >= 10 && n % 10 === 0) n /= 10
  return n === 1
}

/** Runs effects in the context of the fiber that spawned the child (its loggers, log level, annotations). */
export type Runner = <A>(effect: Effect.Effect<A>) => Fiber.Fiber<A>

/** @internal */
export interface AttachOptions {
  /** The process group the child leads (its pid), or `undefined` when it has none of its own. */
  readonly pgid: number | undefined
  /** Registers a callback for cluster's `'listening'` event. */
  readonly onListening?: ((notify: () => void) => void) | undefined
  /**
   * The worker's place on the watchdog's list (taken before the spawn), and
   * when the watchdog kills the worker once the primary is gone.
   */
  readonly watch?: { readonly watch: Watch; readonly when: When } | undefined
  /** A command's heartbeat pipe (the primary's end): every chunk read from it is a beat. */
  readonly beats?: Readable | undefined
  readonly run: Runner
}

/**
 * Waits for one turn of the event loop through its I/O poll: a `setImmediate`
 * callback runs in the check phase, after the poll phase has read what was
 * waiting on every descriptor.
 */
const pollIo: Effect.Effect<void> = Effect.callback<void>((resume) => {
  const immediate = setImmediate(() => resume(Effect.void))
  return Effect.sync(() => clearImmediate(immediate))
})

/**
 * Counts every chunk read from `stream` as a beat, and drops it: what a
 * worker writes there never accumulates. One chunk per turn of the event
 * loop, as for the IPC channel (see `channel.ts`): a worker writing as fast
 * as it can slows itself down, not the primary.
 */
const readBeats = (stream: Readable, onBeat: () => void): void => {
  const resume = () => {
    if (!stream.destroyed) stream.resume()
  }
  stream.on("data", () => {
    onBeat()
    stream.pause()
    setImmediate(resume)
  })
  // A reset by a dying worker: its exit tells the rest.
  stream.on("error", () => {})
}

/** What `diagnose` sends: Node's inspector for Node workers, an abort (a stack dump, a core) for any program. */
const diagnosticSignal = (request: SpawnRequest): Signal => (request.mode === "command" ? "SIGABRT" : "SIGUSR1")

/**
 * Wires a child that `spawn`/`fork` just returned (call it synchronously,
 * before any I/O callback can run) and returns the effect that waits for it
 * to be spawned, or to fail to.
 *
 * @internal
 */
export const attach = (
  request: SpawnRequest,
  child: ChildProcess,
  options: AttachOptions
): Effect.Effect<Started, SpawnFailed> => {
  const { pgid, run } = options
  const started = Deferred.makeUnsafe<Started, SpawnFailed>()
  /** The leader's exit, and the same once its output has been delivered. */
  const reaped = Deferred.makeUnsafe<ExitStatus.ExitStatus>()
  const exited = Deferred.makeUnsafe<ExitStatus.ExitStatus>()
  const closed = Deferred.makeUnsafe<void>()
  const ready = Deferred.makeUnsafe<void>()
  /**
   * A beat only stores its time: nothing runs in Effect per beat, and the
   * supervisor reads it once per deadline. (Waking a fiber per beat cost the
   * primary 0.5 ms of CPU per beat here, 1.5 ms with a `Latch`, which resumes
   * its waiters while still open; measured by bench/health-cost.ts.) Its
   * time is `process.hrtime`, the monotonic clock Effect's default `Clock`
   * reads (see `lastHeartbeat`).
   */
  let lastBeat: bigint | undefined
  const onBeat = () => {
    lastBeat = process.hrtime.bigint()
  }
  const pid = child.pid
  /** The task id: a spare's changes when it is activated. */
  let taskId = request.taskId
  let spare = request.spare === true
  const annotate = <A>(effect: Effect.Effect<A>) =>
    Effect.annotateLogs(effect, { taskId, ...(pid === undefined ? {} : { pid }) })
  let status: ExitStatus.ExitStatus | undefined
  /** The HTTP connections the worker said it was still draining (see `drain.ts`), if it said. */
  let draining: number | undefined
  let spawned = false
  let readers: Array<Output.Reader> = []

  // The watchdog lists the worker now, before anything can delay it; and unlists it once nothing of it is left.
  const target = pid === undefined ? undefined : pgid === undefined ? pid : -pgid
  if (target !== undefined) options.watch?.watch.add(target, options.watch.when)
  const unwatch = () => options.watch?.watch.done()

  /** Whether members of the group may be left after the leader's reap; once false it stays false. */
  let groupLeft = pgid !== undefined
  const groupAlive = pgid === undefined ? () => false : Group.liveness(pgid)

  /** Signals the leader's group (or the leader alone) while the leader is unreaped. */
  const signalLeader = (signal: Signal) => {
    if (pid === undefined || status !== undefined) return
    // No such group yet: a `setsid` wrapper that has not run. The leader is still the only process.
    if (pgid === undefined || Group.signal(pgid, signal) === "none") child.kill(signal)
  }
  /** As `signalLeader`, and after the reap the rest of the group: its pgid cannot be reused while a member lives. */
  const signalGroup = (signal: Signal) => {
    if (status === undefined) signalLeader(signal)
    else if (pgid !== undefined && groupLeft) Group.signal(pgid, signal)
  }
  /** Whether the leader is unreaped or a live member of its group is left (then it unlists the worker). */
  const alive = () => {
    if (status === undefined) return true
    if (groupLeft) groupLeft = groupAlive()
    if (!groupLeft) unwatch()
    return groupLeft
  }

  const markReady = () => Deferred.doneUnsafe(ready, Effect.void)
  if (request.readiness === "spawn") markReady()
  if (request.readiness === "listening") options.onListening?.(markReady)

  child.once("exit", (code, signal) => {
    status = ExitStatus.fromNode(code, signal)
    // Look at the group at once: if it is empty, its pgid may be reused from now on, and must never be signaled.
    alive()
    const exit = Effect.succeed(status)
    Deferred.doneUnsafe(reaped, exit)
    afterOutput(readers, () => Deferred.doneUnsafe(exited, exit))
  })
  child.once("close", () => Deferred.doneUnsafe(closed, Effect.void))
  child.on("error", (error) => {
    // Before 'spawn' this is a failure to start; afterwards (a failed kill or IPC send) the exit tells the rest.
    if (spawned) return
    unwatch()
    options.beats?.destroy()
    for (const reader of readers) reader.interrupt()
    Deferred.doneUnsafe(started, Effect.fail(failed(request, errorCode(error), spawnError(error))))
  })

  if (request.mode !== "command") {
    let dropped = 0
    child.on("message", (message: unknown) => {
      const decoded = Messages.decode(message)
      if (decoded?.type === "effect-prefork/heartbeat") return onBeat()
      if (decoded?.type === "effect-prefork/ready") {
        if (request.readiness !== "spawn") markReady()
        return
      }
      if (decoded?.type === "effect-prefork/listening") {
        if (request.readiness === "listening") markReady()
        return
      }
      if (decoded?.type === "effect-prefork/draining") {
        draining = decoded.connections
        return
      }
      dropped++
      if (isPowerOfTen(dropped)) {
        const sample = String(JSON.stringify(message)).slice(0, 80)
        run(
          annotate(
            Effect.logWarning(
              `child ${taskId} (pid ${pid}) sent an unrecognized IPC message (${dropped} dropped so far): ${sample}`
            )
          )
        )
      }
    })
    Channel.guard(child, (reason) => {
      run(annotate(Effect.logWarning(`child ${taskId} (pid ${pid}) ${reason}: stopping it with SIGKILL`)))
      signalLeader("SIGKILL")
      try {
        if (child.connected) child.disconnect()
      } catch {
        // already disconnected
      }
    })
  }

  if (request.stdio === "pipe") {
    const onOutput = request.onOutput
    for (const stream of ["stdout", "stderr"] as const) {
      const readable = child[stream]
      if (!readable) continue // not set up: the spawn failed
      readers.push(
        Output.read(
          readable,
          onOutput === undefined
            ? undefined
            : (line) => onOutput({ taskId, pid: pid!, stream, line, ...(spare ? { spare } : {}) }),
          run
        )
      )
    }
  }

  if (options.beats !== undefined) readBeats(options.beats, onBeat)

  /** The resident memory of the group (or of the leader alone), while anything of it lives. */
  const memory: Effect.Effect<Option.Option<number>> = Effect.suspend(() => {
    if (pgid === undefined) return status === undefined ? Memory.ofProcess(pid!) : Effect.succeedNone
    // Once the group is empty its pgid may be reused: never measure it again.
    if (status !== undefined && !alive()) return Effect.succeedNone
    return Effect.flatMap(Clock.currentTimeMillis, (now) => Memory.ofGroup(pgid, now))
  })

  /**
   * The last beat in milliseconds of `process.hrtime` (what `monotonicMillis`
   * reads from Effect's default `Clock`), once the event loop has polled its
   * I/O twice: a supervisor that did not run for a while (stopped, blocked)
   * wakes in its timers before it reads the beats waiting in its pipes, and
   * must not judge before reading them.
   */
  const lastHeartbeat: Effect.Effect<Option.Option<number>> = Effect.andThen(
    Effect.andThen(pollIo, pollIo),
    Effect.sync(() => (lastBeat === undefined ? Option.none() : Option.some(Number(lastBeat) / 1_000_000)))
  )

  /** Sends the leader alone the diagnostic signal: SIGUSR1's default action would kill the group's other programs. */
  const diagnose = (signal: Signal) => {
    if (pid === undefined || status !== undefined) return
    try {
      process.kill(pid, signal)
    } catch {
      // gone meanwhile: its exit tells the rest
    }
  }

  const activate = (id: TaskId): Effect.Effect<void> =>
    Effect.callback<void>((resume) => {
      taskId = id
      spare = false
      if (request.mode === "command" || !child.connected) return resume(Effect.void)
      const message: Messages.Activate = { type: "effect-prefork/activate", taskId: id }
      try {
        // A failed send (the worker is exiting) is told by its exit.
        child.send(message, undefined, undefined, () => resume(Effect.void))
      } catch {
        resume(Effect.void)
      }
    })

  child.once("spawn", () => {
    spawned = true
    const exit = Deferred.await(exited)
    const leaderExit = Deferred.await(reaped)
    const exitStatus = Effect.sync(() => Option.fromUndefinedOr(status))
    const signal = diagnosticSignal(request)
    const handle: ProcessHandle = {
      get taskId() {
        return taskId
      },
      pid: pid!,
      exit,
      exitStatus,
      ready: Deferred.await(ready),
      kill: (signal) => Effect.sync(() => signalLeader(signal)),
      stop: makeStop({
        get taskId() {
          return taskId
        },
        get spare() {
          return spare
        },
        pid: pid!,
        exit: leaderExit,
        exitStatus,
        signalGroup: (signal) => Effect.sync(() => signalGroup(signal)),
        alive: Effect.sync(alive),
        draining: () => draining,
        timeout: request.stopTimeout
      }).pipe(Effect.tap(() => Effect.timeoutOption(exit, DRAIN_TIMEOUT))),
      lastHeartbeat,
      memory,
      activate,
      diagnose: (withinMillis) =>
        Effect.suspend((): Effect.Effect<Diagnosis> => {
          if (pid === undefined || status !== undefined) return Effect.succeed({ signal })
          if (signal !== "SIGUSR1") {
            diagnose(signal)
            return Effect.succeed({ signal })
          }
          return Effect.map(
            Effect.promise(() => signalAndCapture(pid, withinMillis, () => diagnose(signal))),
            (stack): Diagnosis => (stack === undefined ? { signal } : { signal, stack })
          )
        })
    }
    const close = Effect.suspend(() =>
      request.stdio === "pipe" ? Effect.timeoutOption(Deferred.await(closed), DRAIN_TIMEOUT) : Effect.void
    ).pipe(
      Effect.ensuring(
        Effect.sync(() => {
          for (const reader of readers) reader.interrupt()
          readers = []
          options.beats?.destroy()
          unwatch()
        })
      ),
      Effect.asVoid
    )
    Deferred.doneUnsafe(started, Effect.succeed({ handle, close }))
  })

  return Deferred.await(started)
}

/**
 * The release of a spawned child: stop it (the leader and its whole group),
 * then let its last piped lines through, but never wait long on a process
 * outside the group holding the pipe.
 *
 * @internal
 */
export const release = ({ close, handle }: Started): Effect.Effect<void> => handle.stop.pipe(Effect.andThen(close))

/**
 * The `Runner` for the current fiber's context.
 *
 * @internal
 */
export const runner: Effect.Effect<Runner> = Effect.map(
  Effect.context<never>(),
  (context) =>
    <A>(effect: Effect.Effect<A>) =>
      Effect.runForkWith(context)(effect)
)
