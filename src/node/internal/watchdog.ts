/**
 * Where the kernel cannot be asked to kill a worker when its primary dies
 * (`setpriv --pdeathsig` is Linux-only, and covers only the process it
 * starts, not that process's children), a watchdog can: a tiny `/bin/sh`
 * process that holds a pipe from the primary, learns each worker as it is
 * spawned and forgets it once nothing of it is left, and SIGKILLs every
 * target still listed when the pipe closes — which the kernel does when the
 * primary dies, even by SIGKILL.
 *
 * A target is what `kill(1)` takes: `-<pgid>` for a worker that leads its
 * process group (the whole group dies), `<pid>` for one that does not (a
 * cluster worker where `setsid` is missing).
 *
 * There is one watchdog per spawner layer: it is started when the layer is
 * built, before any worker, and at the layer's release its pipe is closed, so
 * it kills what is still listed (normally nothing: the supervisor stopped its
 * workers first) and exits; the release waits for that. A worker is listed
 * synchronously right after its `spawn()` returns, and for a primary killed
 * between the fork and that line, the watchdog finds the worker by a token
 * in its environment (Linux). (Measured before: a watchdog started lazily,
 * after the first worker, and told of each worker only on its `'spawn'`
 * event a tick later, missed the workers of a primary SIGKILLed right after
 * starting them; listing them synchronously still left one of four behind
 * in about half of such kills, timed to the moment a worker appeared.)
 *
 * Why `sh` rather than `node -e`: it starts in about a millisecond and costs
 * about a megabyte, not ~40 MB and ~50 ms, which makes it cheap enough to run
 * beside `setpriv` too, for what `setpriv` does not cover: the other members
 * of a worker's group, and cluster workers (which may not be killed by the
 * kernel at once: they are given time to notice the lost primary).
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"

/**
 * The environment variable every watched worker gets: the pid of its
 * watchdog, by which a worker not yet listed is found if the primary dies
 * while spawning it.
 *
 * @internal
 */
export const TOKEN = "PREFORK_WATCHDOG"

/**
 * The environment variable that carries {@link PROGRAM} to the watchdog's
 * shell, which evaluates it (and unsets it, so `sleep`, `tr` and `grep` do
 * not inherit it). The program is not an argument: `ps` would show all of it.
 */
const PROGRAM_VAR = "PREFORK_WATCHDOG_SH"

/**
 * The watchdog's program, evaluated by its `/bin/sh` (POSIX sh; `kill` is a builtin;
 * `sleep`, and `tr` and `grep` on Linux, the only other commands). Terminal
 * and polite signals are ignored: the watchdog ends when its pipe closes, and
 * only then is it useful. A target must be a number above 1 with an optional
 * `-` (never `-1`, which would mean every process). At the end, `now` targets
 * get SIGKILL at once; `late` targets get 1.5 s to exit by themselves first
 * (see {@link When}), looked at every 100 ms: the watchdog ends as soon as
 * none is left, and never signals one that is gone (its pgid may be reused).
 *
 * The primary says `spawning` before each fork and lists the worker (or says
 * `settled`) right after. A primary killed in between leaves a worker the
 * list does not name: then, where `/proc` exists, every process whose
 * environment carries this watchdog's token (`PREFORK_WATCHDOG=<its pid>`,
 * given to every worker) is killed with its group.
 */
const PROGRAM = `unset ${PROGRAM_VAR}
trap '' HUP INT TERM
now=" "
late=" "
pending=0
while IFS=' ' read -r op target; do
  case $op in
    spawning) pending=$((pending + 1)); continue ;;
    settled) pending=$((pending - 1)); continue ;;
  esac
  n=\${target#-}
  case $n in ''|*[!0-9]*|0*|1) continue ;; esac
  case $op in
    now) now="$now$target "; pending=$((pending - 1)) ;;
    late) late="$late$target "; pending=$((pending - 1)) ;;
    forget)
      case $now in *" $target "*) now="\${now%%" $target "*} \${now#*" $target "}" ;; esac
      case $late in *" $target "*) late="\${late%%" $target "*} \${late#*" $target "}" ;; esac ;;
  esac
done
[ "$now" = " " ] || kill -s KILL -- $now 2>/dev/null
if [ $pending -gt 0 ] && [ -r /proc/self/environ ]; then
  for d in /proc/[0-9]*; do
    p=\${d#/proc/}
    if tr '\\0' '\\n' < "$d/environ" 2>/dev/null | grep -qx "${TOKEN}=$$"; then
      kill -s KILL -- "-$p" "$p" 2>/dev/null
    fi
  done
fi
i=0
while [ $i -lt 15 ]; do
  left=""
  for t in $late; do kill -s 0 -- "$t" 2>/dev/null && left="$left $t"; done
  late=$left
  [ -n "$late" ] || exit 0
  sleep 0.1 2>/dev/null || sleep 1
  i=$((i + 1))
done
kill -s KILL -- $late 2>/dev/null
exit 0
`

/**
 * The watchdog's `$0`, so that a person (or a test) can tell it apart.
 *
 * @internal
 */
export const NAME = "prefork-watchdog"

/**
 * The watchdog's arguments after `/bin/sh`: `-c 'eval "$PREFORK_WATCHDOG_SH"'
 * prefork-watchdog <primary pid>`, all that `ps -o args` shows of it.
 */
const argv = (primary: number): ReadonlyArray<string> => ["-c", `eval "$${PROGRAM_VAR}"`, NAME, String(primary)]

/** How long the layer's release waits for the watchdog to exit after its pipe closes. */
const EXIT_TIMEOUT = "2 seconds"

/**
 * When a listed target is killed once the primary is gone: at once, or
 * (`"late"`) after 1.5 s, so a worker that notices the lost primary by
 * itself (a cluster worker sees its IPC channel close) can run its
 * finalizers first, and only one stuck in a loop is killed.
 *
 * @internal
 */
export type When = "now" | "late"

/**
 * One worker's place on the watchdog's list, taken before the worker is
 * spawned (so a watchdog runs when it starts), filled with its target right
 * after, and given back once nothing of the worker is left (or it failed to
 * start).
 *
 * @internal
 */
export interface Watch {
  /** To add to the worker's environment (the watchdog's token), so that it can be found before it is listed. */
  readonly env: Readonly<Record<string, string>>
  /** Lists the worker: `-pgid` for its whole process group, its `pid` alone otherwise. */
  readonly add: (target: number, when: When) => void
  /** Unlists the worker (if listed) and gives the place back. Idempotent. */
  readonly done: () => void
}

/** @internal */
export interface Watchdog {
  /** Makes sure a watchdog runs (starting one if needed) and keeps it running until the watch is `done`. */
  readonly retain: () => Watch
}

const isTarget = (target: number): boolean => Number.isSafeInteger(target) && Math.abs(target) > 1

/** One watchdog process and its pipe. */
interface Running {
  readonly child: ChildProcess
  readonly exited: Deferred.Deferred<void>
  closing: boolean
  /** Lines that may wait (`forget`, `settled`): written with the next line that may not, or on the next turn. */
  later: string
}

/**
 * The watchdog of a spawner layer, for the lifetime of the current scope.
 *
 * It is reference-counted: the scope holds one reference, and each worker
 * one from before its spawn until nothing of it is left. Its pipe is closed
 * (and it exits, its list empty) when the last reference goes: normally at
 * the scope's release, which then waits (bounded) for its exit; later if the
 * scope is released while workers it watches still run (a supervisor that
 * outlives the layer it was given). A worker spawned after that starts a new
 * watchdog. It never keeps the primary alive: its process and pipe are
 * unreferenced. If it cannot be started, a warning is logged and workers are
 * not watched.
 *
 * @internal
 */
export const make: Effect.Effect<Watchdog, never, Scope.Scope> = Effect.gen(function* () {
  const context = yield* Effect.context<never>()
  const warn = (message: string) => {
    Effect.runForkWith(context)(Effect.logWarning(`${message}: workers may outlive this process if it is killed`))
  }
  let current: Running | undefined
  let references = 0

  const start = (): Running | undefined => {
    let child: ChildProcess
    try {
      child = spawn("/bin/sh", argv(process.pid), {
        env: { ...process.env, [PROGRAM_VAR]: PROGRAM },
        stdio: ["pipe", "ignore", "ignore"],
        detached: true,
        windowsHide: true
      })
    } catch (error) {
      warn(`cannot start the watchdog (${String(error)})`)
      return undefined
    }
    const running: Running = {
      child,
      exited: Deferred.makeUnsafe<void>(),
      closing: false,
      later: ""
    }
    const gone = (why: string | undefined) => {
      if (current === running) current = undefined
      if (!running.closing && why !== undefined) warn(why)
      Deferred.doneUnsafe(running.exited, Effect.void)
    }
    child.once("exit", () => gone("the watchdog exited"))
    child.on("error", (error) => gone(`the watchdog failed (${error.message})`))
    child.stdin!.on("error", () => {
      // EPIPE once it is gone: its 'exit' says so.
    })
    child.unref()
    ;(child.stdin as unknown as { unref?: () => void }).unref?.()
    return running
  }

  /**
   * Writes `line` now, after any lines that waited: `spawning` before the
   * fork and a worker's target right after it are never delayed (the pipe
   * write is synchronous while the pipe has room, so they are the
   * watchdog's before the next step).
   */
  const send = (running: Running | undefined, line: string) => {
    if (running === undefined || running.closing || !running.child.stdin!.writable) return
    running.child.stdin!.write(running.later + line)
    running.later = ""
  }

  /**
   * Writes `line` with the next line sent, or on the next turn of the event
   * loop: a restart's `forget` of the old worker then goes in one write with
   * the `spawning` of the new one (one write and one wake-up of the shell
   * fewer per restart). Only lines whose delay errs on the side of killing
   * are delayed: `forget` (a target gone already) and `settled` (a spawn
   * that failed: meanwhile the watchdog would look for the token).
   */
  const sendLater = (running: Running | undefined, line: string) => {
    if (running === undefined || running.closing) return
    const first = running.later === ""
    running.later += line
    // One turn per batch: a line added to lines already waiting goes with them.
    if (first)
      setImmediate(() => {
        if (running.later !== "") send(running, "")
      }).unref()
  }

  /** Drops a reference; the last one closes the pipe. Returns the watchdog that is now exiting, if any. */
  const unref = (): Running | undefined => {
    if (--references > 0) return undefined
    const running = current
    current = undefined
    if (running === undefined) return undefined
    if (running.later !== "") send(running, "")
    running.closing = true
    running.child.stdin!.end()
    return running
  }

  const retain = (): Watch => {
    references++
    current ??= start()
    const running = current
    send(running, "spawning\n")
    let target: number | undefined
    let settled = false
    let done = false
    return {
      env: running?.child.pid === undefined ? {} : { [TOKEN]: String(running.child.pid) },
      add: (t, when) => {
        if (settled || !isTarget(t)) return
        settled = true
        target = t
        send(running, `${when} ${t}\n`)
      },
      done: () => {
        if (done) return
        done = true
        if (!settled) sendLater(running, "settled\n")
        settled = true
        if (target !== undefined) sendLater(running, `forget ${target}\n`)
        unref()
      }
    }
  }

  yield* Effect.acquireRelease(
    Effect.sync(() => {
      references++
      current ??= start()
    }),
    () =>
      Effect.suspend(() => {
        const exiting = unref()
        if (exiting === undefined) return Effect.void
        exiting.child.ref()
        return Effect.timeoutOption(Deferred.await(exiting.exited), EXIT_TIMEOUT)
      }).pipe(Effect.asVoid)
  )
  return { retain }
})
