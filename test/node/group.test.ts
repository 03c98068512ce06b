/**
 * FAULTS.md row 34 with real processes: a worker is its whole process group.
 * When its leader exits (by itself, or promptly on SIGTERM) while other
 * members live, the stop signals the group anyway: SIGTERM, then SIGKILL at
 * the stop timeout, and it returns only once no member is left, so nothing
 * of the worker outlives it and no pipe of theirs stays open in the primary.
 *
 * Each case runs on the `setpriv` path (no watchdog) and on the watchdog
 * path (no `setpriv`), and checks for leftovers at the moment the code under
 * test returns, with no grace period.
 */
import { readdirSync, readFileSync } from "node:fs"
import * as Path from "node:path"
import { assert, describe, it, vi } from "@effect/vitest"
import { Duration, Effect, Layer, Option } from "effect"
import * as ExitStatus from "../../src/ExitStatus.ts"
import * as NodeProcessSpawner from "../../src/node/NodeProcessSpawner.ts"
import { ProcessSpawner, type SpawnRequest } from "../../src/ProcessSpawner.ts"
import * as Supervisor from "../../src/Supervisor.ts"
import { TaskId } from "../../src/TaskId.ts"
import { ask, freePort } from "../helpers/primary.ts"
import { eventually, makeTag, pidsWithTag } from "../helpers/procs.ts"
import { captureLogs, fixture, quiet, tempDir, timed } from "../helpers/supervise.ts"

const paths = [
  ["setpriv", NodeProcessSpawner.layerWith({ watchdog: false })],
  ["watchdog", NodeProcessSpawner.layerWith({ parentDeathSignal: false, watchdog: true })]
] as const

/** A leader that starts a `sleep` in its group and exits 1 at once. */
const SLEEP_AND_EXIT = ["-c", "sleep 300 & exit 1"]

const request = (tagEnv: Record<string, string>, overrides: Partial<SpawnRequest>): SpawnRequest => ({
  taskId: TaskId(0),
  mode: "command",
  command: "sh",
  args: SLEEP_AND_EXIT,
  env: { ...tagEnv, PREFORK_TASK_ID: "0" },
  stdio: "ignore",
  readiness: "spawn",
  stopTimeout: Duration.seconds(2),
  ...overrides
})

/** The pids `family.js` wrote for task 0, once it has (bounded wait). */
const familyChildren = (dir: string) =>
  eventually(() => {
    try {
      const text = readFileSync(Path.join(dir, "children-0"), "utf8").trim()
      return text.length > 0 ? text.split(" ").map(Number) : undefined
    } catch {
      return undefined
    }
  }, "10 seconds")

const fdCount = () => readdirSync("/proc/self/fd").length

/** Process group and session of a live process (`/proc/<pid>/stat`). */
const groupOf = (pid: number) => {
  const stat = readFileSync(`/proc/${pid}/stat`, "latin1")
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
  return { pgid: Number(fields[2]), sid: Number(fields[3]) }
}

for (const [path, layer] of paths) {
  describe(`row 34, ${path} path: the group outlives its leader, not the stop`, () => {
    it.live("a leader that exited by itself: its stop stops the sleep it left, and returns only when it is gone", () =>
      Effect.scoped(
        Effect.gen(function* () {
          const { env, tag } = makeTag()
          const spawner = yield* ProcessSpawner
          const handle = yield* spawner.spawn(request(env, {}))
          assert.deepStrictEqual(yield* handle.exit, ExitStatus.exited(1))
          // The scenario: the leader is reaped, its sleep still runs (the env is fixed at exec: poll, bounded).
          yield* eventually(() => pidsWithTag(tag).length === 1 || undefined)
          const logs = captureLogs()
          const status = yield* handle.stop.pipe(Effect.provide(logs.layer))
          assert.deepStrictEqual(status, ExitStatus.exited(1))
          assert.deepStrictEqual(pidsWithTag(tag), [])
          // sleep dies of SIGTERM: no need for the stop timeout, nor SIGKILL.
          assert.isFalse(
            logs.captured.lines.some((l) => l.includes("sending SIGKILL")),
            logs.captured.lines.join("\n")
          )
          // A second stop is the same run: nothing more to do.
          assert.deepStrictEqual(yield* handle.stop, ExitStatus.exited(1))
        }).pipe(Effect.provide(layer))
      )
    )

    it.live("the scope's release does the same for a leader that exited by itself", () =>
      Effect.gen(function* () {
        const { env, tag } = makeTag()
        yield* Effect.scoped(
          Effect.gen(function* () {
            const spawner = yield* ProcessSpawner
            const handle = yield* spawner.spawn(request(env, {}))
            yield* handle.exit
            yield* eventually(() => pidsWithTag(tag).length === 1 || undefined)
          })
        )
        assert.deepStrictEqual(pidsWithTag(tag), [])
      }).pipe(Effect.provide(layer))
    )

    it.live(
      "a member that ignores SIGTERM, left by a leader that exits on SIGTERM, gets SIGKILL at the stop timeout",
      () =>
        Effect.scoped(
          Effect.gen(function* () {
            const dir = yield* tempDir
            const { env, tag } = makeTag()
            const logs = captureLogs()
            const spawner = yield* ProcessSpawner
            const handle = yield* spawner
              .spawn(
                request(env, {
                  command: process.execPath,
                  args: [fixture("family.js"), dir, "2", "term"],
                  stopTimeout: Duration.millis(700)
                })
              )
              .pipe(Effect.provide(logs.layer))
            const children = yield* familyChildren(dir)
            assert.strictEqual(children.length, 2)
            const [status, ms] = yield* timed(handle.stop.pipe(Effect.provide(logs.layer)))
            // The leader exited 0 on SIGTERM; its children did not, and were killed at the deadline.
            assert.deepStrictEqual(status, ExitStatus.exited(0))
            assert.deepStrictEqual(pidsWithTag(tag), [])
            assert.isAtLeast(ms, 650)
            // The killed children are zombies until init reaps them (here ~1.5 s later): the stop does not wait for that.
            assert.isBelow(ms, 700 + 1000)
            assert.isTrue(
              logs.captured.lines.some((l) =>
                /child 0 \(pid \d+\) exited, processes of its group still running 700 ms after SIGTERM, sending SIGKILL/.test(
                  l
                )
              ),
              logs.captured.lines.join("\n")
            )
          }).pipe(Effect.provide(layer))
        )
    )

    it.live("with piped output, the members' pipes close too: the primary's fd count returns to its baseline", () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const { env, tag } = makeTag()
        const spawner = yield* ProcessSpawner
        const baseline = fdCount()
        const lines: Array<string> = []
        let heldOpen = 0
        yield* Effect.scoped(
          Effect.gen(function* () {
            const handle = yield* spawner.spawn(
              request(env, {
                command: process.execPath,
                args: [fixture("family.js"), dir, "3", "exit:1"],
                stopTimeout: Duration.millis(300),
                stdio: "pipe",
                onOutput: (line) => {
                  lines.push(line.line)
                }
              })
            )
            assert.deepStrictEqual(yield* handle.exit, ExitStatus.exited(1))
            assert.strictEqual((yield* familyChildren(dir)).length, 3)
            // The children hold the stdout and stderr pipes: the primary's ends stay open.
            heldOpen = fdCount() - baseline
          })
        )
        assert.deepStrictEqual(pidsWithTag(tag), [])
        assert.isAtLeast(heldOpen, 2)
        assert.strictEqual(fdCount(), baseline)
      }).pipe(Effect.provide(layer), Effect.scoped)
    )

    it.live("a leader whose group is already empty: the stop signals nothing (its pgid may be reused)", () =>
      Effect.scoped(
        Effect.gen(function* () {
          const { env, tag } = makeTag()
          const spawner = yield* ProcessSpawner
          const handle = yield* spawner.spawn(request(env, { args: ["-c", "exit 4"] }))
          assert.deepStrictEqual(yield* handle.exit, ExitStatus.exited(4))
          const kills = vi.spyOn(process, "kill")
          yield* Effect.addFinalizer(() => Effect.sync(() => kills.mockRestore()))
          assert.deepStrictEqual(yield* handle.stop, ExitStatus.exited(4))
          // Probes (signal 0) at most; never a real signal.
          assert.deepStrictEqual(
            kills.mock.calls.filter(([, signal]) => signal !== 0),
            []
          )
          assert.deepStrictEqual(pidsWithTag(tag), [])
        }).pipe(Effect.provide(layer))
      )
    )

    it.live("Supervisor.run: 3 incarnations that each leave a sleep end in TooManyRestarts with nothing left", () =>
      Effect.gen(function* () {
        const { env, tag } = makeTag()
        const result = yield* Effect.flip(
          Supervisor.run({
            processes: 1,
            command: "sh",
            args: SLEEP_AND_EXIT,
            env,
            stdio: "ignore",
            maxRestarts: 2,
            stopTimeout: "2 seconds"
          })
        )
        // At the moment the supervisor returns: every sleep of every incarnation is gone.
        const left = pidsWithTag(tag)
        assert.strictEqual(result._tag, "TooManyRestarts")
        if (result._tag === "TooManyRestarts") assert.strictEqual(result.restarts, 2)
        assert.deepStrictEqual(left, [])
      }).pipe(Effect.provide(Layer.merge(layer, quiet)))
    )
  })
}

for (const [path, layer] of paths) {
  describe(`row 34, ${path} path: cluster workers are process groups too`, () => {
    it.live("a cluster worker leads its own group and session, with the pid cluster reports; listening works", () =>
      Effect.scoped(
        Effect.gen(function* () {
          const port = yield* freePort
          const { env, tag } = makeTag()
          const spawner = yield* ProcessSpawner
          const handle = yield* spawner.spawn(
            request(env, {
              mode: "cluster",
              command: fixture("http-worker.js"),
              args: [String(port)],
              readiness: "listening"
            })
          )
          // 'listening' travels over the IPC channel: it still works through setsid.
          yield* handle.ready
          assert.deepStrictEqual(groupOf(handle.pid), { pgid: handle.pid, sid: handle.pid })
          assert.notStrictEqual(groupOf(process.pid).pgid, handle.pid)
          const answer = yield* ask(port)
          assert.isTrue(Option.isSome(answer))
          if (Option.isSome(answer)) assert.strictEqual(answer.value.pid, handle.pid)
          yield* handle.stop
          assert.deepStrictEqual(pidsWithTag(tag), [])
        }).pipe(Effect.provide(layer))
      )
    )

    it.live("a cluster worker that exits leaving children: its stop stops them", () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const { env, tag } = makeTag()
          const spawner = yield* ProcessSpawner
          const handle = yield* spawner.spawn(
            request(env, {
              mode: "cluster",
              command: fixture("family.js"),
              args: [dir, "2", "exit:1"],
              stopTimeout: Duration.millis(300)
            })
          )
          assert.deepStrictEqual(yield* handle.exit, ExitStatus.exited(1))
          assert.strictEqual((yield* familyChildren(dir)).length, 2)
          assert.strictEqual(pidsWithTag(tag).length, 2)
          yield* handle.stop
          assert.deepStrictEqual(pidsWithTag(tag), [])
        }).pipe(Effect.provide(layer))
      )
    )
  })
}
