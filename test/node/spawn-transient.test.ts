/**
 * FAULTS.md row 36, for real: a worker that cannot be forked for want of a
 * resource is retried, not fatal. A primary of its own runs three workers; it
 * is run short of a resource, one worker is killed, and its restart fails —
 * EMFILE (the primary opens files until its `ulimit -n` is reached), or EAGAIN
 * (the primary runs as nobody and its `RLIMIT_NPROC` is lowered to 1 with
 * `prlimit`; root is exempt from it) — until the resource is given back. Then
 * the worker is restarted; the two others were never stopped; the retries were
 * told (events, warnings) and spent no restart budget. In every mode.
 */
import { execFileSync } from "node:child_process"
import { existsSync, readdirSync, readFileSync } from "node:fs"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { awaitExit, type Primary, spawnPrimary, waitLine } from "../helpers/primary.ts"
import { assertNoneLeft, eventually } from "../helpers/procs.ts"
import { fixture } from "../helpers/supervise.ts"

const root = process.getuid?.() === 0
const nobody = (() => {
  try {
    const uid = Number(execFileSync("id", ["-u", "nobody"], { encoding: "utf8" }).trim())
    const gid = Number(execFileSync("id", ["-g", "nobody"], { encoding: "utf8" }).trim())
    return { uid, gid }
  } catch {
    return undefined
  }
})()

interface Event {
  readonly _tag: string
  readonly taskId?: number
  readonly pid?: number
  readonly code?: string
  readonly attempt?: number
  readonly delay?: number
  readonly spare?: boolean
}

const eventsOf = (primary: Primary): Array<Event> =>
  primary.lines.filter((l) => l.startsWith("EVENT ")).map((l) => JSON.parse(l.slice(6)) as Event)

const waitEvents = (primary: Primary, predicate: (events: Array<Event>) => boolean) =>
  eventually(() => {
    const events = eventsOf(primary)
    return predicate(events) ? events : undefined
  }, "20 seconds")

const alive = (pid: number): boolean => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "latin1")
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3)
    return state !== "Z" && state !== "X"
  } catch {
    return false
  }
}

const modes = ["module", "command", "cluster"] as const

const optionsFor = (mode: (typeof modes)[number]) =>
  JSON.stringify({
    mode,
    processes: 3,
    ...(mode === "command"
      ? { command: process.execPath, args: [fixture("forever.js")] }
      : { command: fixture("forever.js") }),
    // Piped output: a failed spawn has pipes to give back.
    stdio: "pipe",
    ready: "spawn",
    // The kill spends the whole budget: a retry that spent any would end the run.
    maxRestarts: 1
  })

/**
 * The scenario, given how to run the primary short of a resource and give it
 * back: kill child 0, see its restart retried (twice at least), give the
 * resource back, see it restarted while the others ran on, stop the primary.
 */
const scenario = (
  primary: Primary,
  code: string,
  meaning: RegExp,
  short: Effect.Effect<void>,
  restore: Effect.Effect<void>
) =>
  Effect.gen(function* () {
    const first = yield* waitEvents(primary, (events) => events.filter((e) => e._tag === "Started").length >= 3)
    const started = first.filter((e) => e._tag === "Started")
    const victim = started.find((e) => e.taskId === 0)!.pid!
    const others = started.filter((e) => e.taskId !== 0).map((e) => e.pid!)
    yield* short
    process.kill(victim, "SIGKILL")
    const retried = (n: number) =>
      waitEvents(primary, (events) => events.filter((e) => e._tag === "SpawnRetrying").length >= n)
    yield* retried(2)
    const fds = readdirSync(`/proc/${primary.pid}/fd`).length
    const retrying = yield* retried(4)
    // A failed spawn leaves no descriptor behind (its pipes and channel, three or more): two more retries would add
    // six. The primary's own descriptors may come and go by one meanwhile (seen in cluster mode, both ways).
    assert.isAtMost(readdirSync(`/proc/${primary.pid}/fd`).length, fds + 1)
    yield* restore
    const after = yield* waitEvents(primary, (events) => events.filter((e) => e._tag === "Started").length >= 4)
    const output = primary.lines.join("\n")
    // The retries: of child 0, for this shortage, with a delay that grows.
    const retries = retrying.filter((e) => e._tag === "SpawnRetrying")
    assert.deepStrictEqual(
      retries.slice(0, 4).map((e) => [e.taskId, e.code, e.attempt, e.delay]),
      [
        [0, code, 1, 100],
        [0, code, 2, 200],
        [0, code, 3, 400],
        [0, code, 4, 800]
      ],
      output
    )
    assert.match(output, meaning)
    assert.match(output, /cannot start child 0 .*; retrying in 100ms \(attempt 1\)/)
    // Child 0 is back, with a new pid; the others were never stopped.
    const restarted = after.findLast((e) => e._tag === "Started")!
    assert.strictEqual(restarted.taskId, 0)
    assert.notStrictEqual(restarted.pid, victim)
    const exited = after.filter((e) => e._tag === "Exited").map((e) => e.pid)
    assert.deepStrictEqual(exited, [victim], output)
    for (const pid of others) assert.isTrue(alive(pid), `worker ${pid} was stopped`)
    assert.notMatch(output, /SpawnFailed|Too many child restarts|Unhandled 'error' event/)
    assert.isUndefined(primary.exited(), output)
    // Stopped, it stops every worker and exits 0.
    process.kill(primary.pid, "SIGTERM")
    const exit = yield* awaitExit(primary, "20 seconds")
    assert.deepStrictEqual(exit, { code: 0, signal: null }, primary.lines.join("\n"))
    yield* assertNoneLeft(primary.tag)
  })

describe("row 36: a restart short of file descriptors (EMFILE) is retried until they are back", () => {
  for (const mode of modes) {
    it.live(`${mode} mode`, () =>
      Effect.scoped(
        Effect.gen(function* () {
          const primary = yield* spawnPrimary("shortage-primary.ts", [optionsFor(mode)], { ulimitNofile: 64 })
          const toggle = Effect.gen(function* () {
            const before = primary.lines.length
            process.kill(primary.pid, "SIGUSR2")
            yield* eventually(() =>
              primary.lines.slice(before).find((l) => l.startsWith("HOGGED ") || l === "RELEASED")
            )
          })
          yield* scenario(
            primary,
            "EMFILE",
            /the primary has too many open files \(ulimit -n\); retrying in/,
            toggle,
            toggle
          )
        })
      )
    )
  }
})

describe.skipIf(!root || nobody === undefined || !existsSync("/usr/bin/prlimit"))(
  "row 36: a restart short of processes (EAGAIN, RLIMIT_NPROC of a primary run as nobody) is retried until it is raised",
  () => {
    const asNobody = [`--reuid=${nobody?.uid}`, `--regid=${nobody?.gid}`, "--clear-groups", "--"]
    /** Sets the primary's soft RLIMIT_NPROC, as nobody (the owner of the process, which may lower and raise it up to its hard limit). */
    const setNproc = (pid: number, soft: string) =>
      Effect.sync(() => {
        execFileSync("setpriv", [...asNobody, "prlimit", `--pid=${pid}`, `--nproc=${soft}:`], { stdio: "ignore" })
      })
    for (const mode of modes) {
      it.live(`${mode} mode`, () =>
        Effect.scoped(
          Effect.gen(function* () {
            const primary = yield* spawnPrimary("shortage-primary.ts", [optionsFor(mode)], {
              prefix: ["setpriv", ...asNobody]
            })
            const limits = readFileSync(`/proc/${primary.pid}/limits`, "utf8")
            const soft = /^Max processes\s+(\S+)/m.exec(limits)![1]!
            yield* scenario(
              primary,
              "EAGAIN",
              /no more processes can be created now \(ulimit -u, pids cgroup\); retrying in/,
              setNproc(primary.pid, "1"),
              setNproc(primary.pid, soft)
            )
          })
        )
      )
    }
  }
)
