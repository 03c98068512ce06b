/**
 * FAULTS row 44: the supervisor itself stops running for longer than the
 * heartbeat timeout (SIGSTOP, a long synchronous task), with real processes.
 * Its heartbeat deadlines pass while it is stopped, and the workers' beats
 * wait unread in their IPC channels: a verdict on resume must read them
 * first, and must not count the time the supervisor did not run. A worker
 * that really hangs must still be found.
 *
 * The supervisor runs in a process of its own (`fixtures/stall-primary.ts`,
 * `primary.ts` that blocks its own event loop on SIGUSR2). What is checked is
 * an outcome (which workers were killed, whether the budget was spent), never
 * how fast anything ran.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { awaitExit, type Primary, type PrimaryEvent, spawnPrimary, waitLine } from "../helpers/primary.ts"
import { assertNoneLeft, eventually, pidsWithTag } from "../helpers/procs.ts"
import { fixture, tempDir } from "../helpers/supervise.ts"

/** The heartbeat timeout of these tests: the supervisor stalls for 3× it. */
const TIMEOUT_MS = 1000
const STALL_MS = 3 * TIMEOUT_MS

/** Two module workers that idle, and blocks its event loop for good on SIGUSR2; heartbeats every 250 ms. */
const options = (more: Record<string, unknown> = {}) =>
  JSON.stringify({
    mode: "module",
    command: fixture("block-on-usr2.js"),
    processes: 2,
    ready: "spawn",
    heartbeat: `${TIMEOUT_MS} millis`,
    stopTimeout: "2 seconds",
    ...more
  })

/** An event line of the primary beyond what `PrimaryEvent` names (`Unresponsive` carries the worker's pid). */
const eventsOf = (primary: Primary, tag: string): Array<PrimaryEvent> =>
  primary.events().filter((e) => (e._tag as string) === tag)

/** Waits (bounded) until both workers are ready; their pids. */
const readyPids = (primary: Primary) =>
  Effect.map(
    eventually(() => {
      const ready = eventsOf(primary, "Ready")
      return ready.length >= 2 ? ready : undefined
    }, "15 seconds"),
    (ready) => ready.map((e) => e.pid!).sort()
  )

/** Which of `pids` still live (the primary's tag is on every process it started, its watchdog too). */
const living = (primary: Primary, pids: ReadonlyArray<number>) => {
  const live = pidsWithTag(primary.tag)
  return pids.filter((pid) => live.includes(pid))
}

/** Stops the primary with SIGSTOP for `millis`, then SIGCONT. */
const stopFor = (primary: Primary, millis: number) =>
  Effect.gen(function* () {
    process.kill(primary.pid, "SIGSTOP")
    yield* Effect.sleep(millis).pipe(Effect.ensuring(Effect.sync(() => process.kill(primary.pid, "SIGCONT"))))
  })

/** Nothing was killed and nothing spent: the same workers, no `Unresponsive`, no `Exited`, no warning. */
const assertUntouched = (primary: Primary, pids: ReadonlyArray<number>) => {
  const log = primary.lines.join("\n")
  assert.deepStrictEqual(eventsOf(primary, "Unresponsive"), [], log)
  assert.deepStrictEqual(eventsOf(primary, "Exited"), [], log)
  assert.notMatch(log, /unresponsive/, log)
  assert.isUndefined(primary.exited(), log)
  assert.deepStrictEqual(living(primary, pids), pids, log)
}

/** SIGTERM, exit 0, nothing left. */
const stop = (primary: Primary) =>
  Effect.gen(function* () {
    primary.child.kill("SIGTERM")
    const exit = yield* awaitExit(primary)
    assert.strictEqual(exit.code, 0, primary.lines.join("\n"))
    yield* assertNoneLeft(primary.tag)
  })

describe("the supervisor stalls (FAULTS row 44, real processes)", () => {
  /** How the supervisor stalls: SIGSTOP then SIGCONT, or a busy loop of its own (SIGUSR2 to `stall-primary.ts`). */
  const stalls = {
    "SIGSTOPped for 3× the heartbeat timeout, then SIGCONT": (primary: Primary) => stopFor(primary, STALL_MS),
    "blocked by a synchronous task for 3× the heartbeat timeout": (primary: Primary) =>
      Effect.gen(function* () {
        primary.child.kill("SIGUSR2")
        yield* waitLine(primary, /^BLOCKED /, "20 seconds")
      })
  } as const
  const cases = [
    ...(["module", "cluster", "command"] as const).map((mode) => ({
      mode,
      how: "SIGSTOPped for 3× the heartbeat timeout, then SIGCONT" as const
    })),
    { mode: "module", how: "blocked by a synchronous task for 3× the heartbeat timeout" } as const
  ]
  for (const { how, mode } of cases) {
    it.live(`${mode}: the supervisor ${how}: no healthy worker is killed, no budget spent`, () =>
      Effect.scoped(
        Effect.gen(function* () {
          // A command beats on its heartbeat descriptor (health-block.sh, never told to block).
          const worker =
            mode === "command"
              ? { mode, command: "/bin/sh", args: [fixture("health-block.sh"), yield* tempDir] }
              : { mode }
          // No restart allowed: a worker killed as unresponsive would end the run.
          const primary = yield* spawnPrimary("stall-primary.ts", [options({ maxRestarts: 0, ...worker })], {
            env: { PREFORK_TEST_BLOCK_MS: String(STALL_MS) }
          })
          const pids = yield* readyPids(primary)
          // Beats flow, and the watches have passed a deadline or so, before the stall.
          yield* Effect.sleep(TIMEOUT_MS)
          yield* stalls[how](primary)
          // Three timeouts of the supervisor running again: a verdict would have come by now.
          yield* Effect.sleep(STALL_MS)
          assertUntouched(primary, pids)
          yield* stop(primary)
        })
      )
    )
  }

  it.live(
    "a worker that hangs just before the supervisor is SIGSTOPped is still found after it resumes; its sibling is untouched",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const primary = yield* spawnPrimary("stall-primary.ts", [options()])
          const [hung, healthy] = yield* readyPids(primary)
          yield* Effect.sleep(TIMEOUT_MS)
          process.kill(hung!, "SIGUSR2")
          const blockedAt = Date.now()
          yield* stopFor(primary, STALL_MS)
          const told = yield* eventually(
            () => eventsOf(primary, "Unresponsive").find((e) => e.pid === hung),
            "20 seconds"
          )
          // Never before its deadline (the event's time is the primary's clock: the same machine's).
          assert.isAtLeast(told.at, blockedAt + TIMEOUT_MS)
          const exited = yield* eventually(() => eventsOf(primary, "Exited").find((e) => e.pid === hung))
          assert.deepStrictEqual(exited.status, { _tag: "Signaled", signal: "SIGKILL" })
          assert.isTrue(exited.restart)
          // Replaced with its task id; the healthy one was never judged.
          yield* eventually(() => eventsOf(primary, "Ready").find((e) => e.taskId === exited.taskId && e.pid !== hung))
          const log = primary.lines.join("\n")
          assert.deepStrictEqual(
            eventsOf(primary, "Unresponsive").map((e) => e.pid),
            [hung],
            log
          )
          assert.deepStrictEqual(
            eventsOf(primary, "Exited").map((e) => e.pid),
            [hung],
            log
          )
          assert.deepStrictEqual(living(primary, [healthy!]), [healthy], log)
          yield* stop(primary)
        })
      ),
    40_000
  )
})
