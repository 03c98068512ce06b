/**
 * The health primitives of the Node spawner, with real processes and the
 * spawner used directly: heartbeats (a module, a cluster and a command
 * worker), the memory of a worker's process group, spares and their
 * activation, and the diagnostic signal.
 *
 * No assertion depends on speed: every wait is bounded in time and in tries,
 * and what is checked is an order or an outcome (a beat came, then none does
 * while the worker lives; a file appeared; a line was printed).
 */
import { fork } from "node:child_process"
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import { assert, describe, it, vi } from "@effect/vitest"
import { Duration, Effect, Option } from "effect"
import * as ExitStatus from "../../src/ExitStatus.ts"
import * as NodeProcessSpawner from "../../src/node/NodeProcessSpawner.ts"
import { type ProcessHandle, ProcessSpawner, type SpawnRequest } from "../../src/ProcessSpawner.ts"
import { TaskId } from "../../src/TaskId.ts"
import { assertNoneLeft, eventually, makeTag, pidsWithTag } from "../helpers/procs.ts"

const layer = NodeProcessSpawner.layer

const fixture = (name: string): string => fileURLToPath(new URL(`../fixtures/${name}`, import.meta.url))

const tempDir = Effect.acquireRelease(
  Effect.sync(() => mkdtempSync(Path.join(tmpdir(), "prefork-health-"))),
  (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
)

const request = (tagEnv: Record<string, string>, overrides: Partial<SpawnRequest>): SpawnRequest => ({
  taskId: TaskId(0),
  mode: "module",
  command: fixture("health-block.js"),
  args: [],
  // As the supervisor sets it: the spawner removes it for a spare.
  env: { ...tagEnv, PREFORK_TASK_ID: "0" },
  stdio: "ignore",
  readiness: "spawn",
  stopTimeout: Duration.seconds(2),
  ...overrides
})

/** Waits (bounded) until `<dir>/<name>` exists (and its content is `complete`), and reads it. */
const file = (dir: string, name: string, complete: (content: string) => boolean = () => true) =>
  eventually(() => {
    const path = Path.join(dir, name)
    const content = existsSync(path) ? readFileSync(path, "utf8") : undefined
    return content !== undefined && complete(content) ? content : undefined
  }, "15 seconds")

/** Waits (bounded) until a file named `<prefix>…` exists in `dir`, and says its name. */
/** A JSON file the fixture wrote, once it is whole (written in one `writeFileSync`, it may be read half done). */
const json = (dir: string, name: string) =>
  Effect.map(
    file(dir, name, (s) => s.endsWith("}")),
    (s): unknown => JSON.parse(s)
  )

/** Whether a heartbeat comes within `window` (its time changes; polled every 10 ms). */
const beatWithin = (handle: ProcessHandle, window: Duration.Input) =>
  Effect.gen(function* () {
    const before = yield* handle.lastHeartbeat
    const deadline = Date.now() + Duration.toMillis(Duration.fromInputUnsafe(window))
    while (Date.now() < deadline) {
      yield* Effect.sleep(10)
      const now = yield* handle.lastHeartbeat
      if (Option.isSome(now) && (Option.isNone(before) || now.value !== before.value)) return true
    }
    return false
  })

/**
 * Waits until a whole second passes without a beat: beats sent just before
 * the worker blocked may still be on their way. A worker beating every 50 ms
 * never gives such a second, so the 10 tries fail.
 */
const beatsStop = (handle: ProcessHandle) =>
  Effect.gen(function* () {
    for (let tries = 0; tries < 10; tries++) {
      if (!(yield* beatWithin(handle, "1 second"))) return tries
    }
    return yield* Effect.die(new Error("the worker kept beating"))
  })

/** The process group of a live process (`/proc/<pid>/stat`). */
const groupOf = (pid: number): number => {
  const stat = readFileSync(`/proc/${pid}/stat`, "latin1")
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[2])
}

const MB = 1024 * 1024

describe("heartbeats (real processes)", () => {
  for (const mode of ["module", "cluster", "command"] as const) {
    it.live(`${mode}: beats come from the worker's loop, and stop when the loop blocks while the worker lives`, () =>
      Effect.gen(function* () {
        const { env, tag } = makeTag()
        yield* Effect.scoped(
          Effect.gen(function* () {
            const dir = yield* tempDir
            const spawner = yield* ProcessSpawner
            const handle = yield* spawner.spawn(
              request(env, {
                mode,
                heartbeat: Duration.millis(50),
                ...(mode === "command"
                  ? { command: "/bin/sh", args: [fixture("health-block.sh"), dir] }
                  : { args: [dir] })
              })
            )
            // Three beats, one after the other.
            for (let i = 0; i < 3; i++) assert.isTrue(yield* beatWithin(handle, "15 seconds"), `beat ${i}`)
            writeFileSync(Path.join(dir, "block"), "")
            yield* file(dir, `blocked-${handle.pid}`)
            yield* beatsStop(handle)
            // Not beating, yet alive.
            assert.isTrue(Option.isNone(yield* handle.exitStatus))
            assert.doesNotThrow(() => process.kill(handle.pid, 0))
            yield* handle.stop
            assert.isFalse(yield* beatWithin(handle, "300 millis"))
          })
        )
        yield* assertNoneLeft(tag)
      }).pipe(Effect.provide(layer))
    )
  }

  it.live("a command gets its heartbeat descriptor right after its sockets, and a worker without heartbeats none", () =>
    Effect.gen(function* () {
      const { env, tag } = makeTag()
      yield* Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const spawner = yield* ProcessSpawner
          const [socket] = yield* spawner.listen([
            { _tag: "Tcp", host: "127.0.0.1", port: 0, backlog: 16, ipv6Only: false, name: undefined }
          ])
          const show = `printf '%s %s %s' "$PREFORK_HEARTBEAT_FD" "$PREFORK_HEARTBEAT_MS" "$LISTEN_FDS" >"$1/$2"`
          const withBeats = yield* spawner.spawn(
            request(env, {
              mode: "command",
              command: "/bin/sh",
              args: [
                "-c",
                `${show}; while :; do printf . >&"$PREFORK_HEARTBEAT_FD"; sleep 0.1; done`,
                "sh",
                dir,
                "beats"
              ],
              sockets: socket === undefined ? [] : [socket],
              heartbeat: Duration.millis(1500)
            })
          )
          // The shell creates the file before printf writes to it: read it once written.
          assert.strictEqual(yield* file(dir, "beats", (s) => s.length > 0), "4 1500 1")
          assert.isTrue(yield* beatWithin(withBeats, "15 seconds"))
          yield* spawner.spawn(
            request(env, {
              mode: "command",
              command: "/bin/sh",
              args: ["-c", `${show}; exec sleep 300`, "sh", dir, "none"]
            })
          )
          assert.strictEqual(yield* file(dir, "none", (s) => s.length > 0), "  ")
        })
      )
      yield* assertNoneLeft(tag)
    }).pipe(Effect.provide(layer))
  )
})

describe("memory (real processes)", () => {
  it.live("the group's resident memory grows with the worker's allocation, then with its child's; none once gone", () =>
    Effect.gen(function* () {
      const { env, tag } = makeTag()
      yield* Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const spawner = yield* ProcessSpawner
          const handle = yield* spawner.spawn(request(env, { command: fixture("health-alloc.js"), args: [dir] }))
          yield* file(dir, `started-${handle.pid}`)
          const baseline = Option.getOrThrow(yield* handle.memory)
          assert.isAbove(baseline, 10 * MB)

          writeFileSync(Path.join(dir, "alloc"), "")
          yield* file(dir, "allocated")
          const own = Option.getOrThrow(yield* handle.memory)
          assert.isAbove(own, baseline + 80 * MB, `${baseline} → ${own}`)

          writeFileSync(Path.join(dir, "child"), "")
          const child = Number(yield* file(dir, "child-allocated", (s) => s.length > 0))
          assert.strictEqual(groupOf(child), handle.pid)
          const group = Option.getOrThrow(yield* handle.memory)
          assert.isAbove(group, own + 80 * MB, `${own} → ${group}`)

          yield* handle.stop
          assert.isTrue(Option.isNone(yield* handle.memory))
        })
      )
      yield* assertNoneLeft(tag)
    }).pipe(Effect.provide(layer))
  )
})

describe("spares (real processes)", () => {
  for (const [mode, how] of [
    ["module", "effect"],
    ["module", "promise"],
    ["cluster", "effect"]
  ] as const) {
    it.live(
      `${mode}, Worker.${how === "effect" ? "taskId" : "activated()"}: no task id until activated, then the one given`,
      () =>
        Effect.gen(function* () {
          const { env, tag } = makeTag()
          yield* Effect.scoped(
            Effect.gen(function* () {
              const dir = yield* tempDir
              const spawner = yield* ProcessSpawner
              const handle = yield* spawner.spawn(
                request(env, { mode, command: fixture("health-spare.ts"), args: [dir, how], spare: true })
              )
              const waiting = yield* json(dir, `waiting-${handle.pid}`)
              assert.deepStrictEqual(waiting, { taskId: null, spare: "1" })
              assert.isFalse(existsSync(Path.join(dir, `active-${handle.pid}`)))
              yield* handle.activate(TaskId(3))
              assert.strictEqual(handle.taskId, 3)
              const active = yield* json(dir, `active-${handle.pid}`)
              assert.deepStrictEqual(active, { id: 3, taskId: "3", spare: null })
              // A module worker with nothing left to do exits: the activation left no listener on its channel.
              // (A cluster worker stays until its channel closes, by node:cluster's design.)
              if (mode === "module") {
                const exit = yield* Effect.timeoutOption(handle.exit, "15 seconds")
                assert.deepStrictEqual(exit, Option.some(ExitStatus.exited(0)))
              }
            })
          )
          yield* assertNoneLeft(tag)
        }).pipe(Effect.provide(layer))
    )
  }

  it.live("a spare never activated waits, alive, and is gone when the scope closes", () =>
    Effect.gen(function* () {
      const { env, tag } = makeTag()
      yield* Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const spawner = yield* ProcessSpawner
          const handle = yield* spawner.spawn(
            request(env, {
              command: fixture("health-spare.ts"),
              args: [dir, "promise"],
              spare: true,
              heartbeat: Duration.millis(50)
            })
          )
          yield* file(dir, `waiting-${handle.pid}`)
          // It beats while it waits (its loop turns), and does not exit.
          for (let i = 0; i < 3; i++) assert.isTrue(yield* beatWithin(handle, "15 seconds"))
          assert.isTrue(Option.isNone(yield* Effect.timeoutOption(handle.exit, "1 second")))
          assert.isFalse(existsSync(Path.join(dir, `active-${handle.pid}`)))
          assert.strictEqual(pidsWithTag(tag).length, 1)
        })
      )
      yield* assertNoneLeft(tag)
    }).pipe(Effect.provide(layer))
  )

  it.live(
    "without the preload, Worker.activated() listens itself, and gets an activation sent before it listened",
    () =>
      Effect.gen(function* () {
        const { env, tag } = makeTag()
        yield* Effect.scoped(
          Effect.gen(function* () {
            const dir = yield* tempDir
            const child = yield* Effect.acquireRelease(
              Effect.sync(() =>
                fork(fixture("health-spare.ts"), [dir, "promise"], {
                  env: { ...process.env, ...env, PREFORK_SPARE: "1", PREFORK_TASK_ID: "" },
                  stdio: ["ignore", "inherit", "inherit", "ipc"]
                })
              ),
              (child) => Effect.sync(() => child.kill("SIGKILL"))
            )
            const exited = Effect.callback<number | null>((resume) => {
              if (child.exitCode !== null) return resume(Effect.succeed(child.exitCode))
              child.once("exit", (code) => resume(Effect.succeed(code)))
            })
            // Sent at once: the worker is still loading its modules, with no listener yet.
            child.send({ type: "effect-prefork/activate", taskId: 5 })
            const active = yield* json(dir, `active-${child.pid}`)
            assert.deepStrictEqual(active, { id: 5, taskId: "5", spare: null })
            assert.deepStrictEqual(yield* Effect.timeoutOption(exited, "15 seconds"), Option.some(0))
          })
        )
        yield* assertNoneLeft(tag)
      })
  )
})

describe("diagnose (real processes)", () => {
  for (const mode of ["module", "cluster"] as const) {
    it.live(
      `SIGUSR1 to blocked ${mode} workers: each prints its inspector's address, on a port of its own, and gives the primary its stack`,
      () =>
        Effect.gen(function* () {
          const { env, tag } = makeTag()
          yield* Effect.scoped(
            Effect.gen(function* () {
              const dir = yield* tempDir
              const spawner = yield* ProcessSpawner
              const lines: Array<{ pid: number; line: string }> = []
              const spawnOne = spawner.spawn(
                request(env, {
                  mode,
                  args: [dir],
                  heartbeat: Duration.seconds(1),
                  stdio: "pipe",
                  onOutput: ({ line, pid, stream }) => {
                    if (stream === "stderr") lines.push({ pid, line })
                  }
                })
              )
              const workers = [yield* spawnOne, yield* spawnOne]
              writeFileSync(Path.join(dir, "block"), "")
              for (const worker of workers) yield* file(dir, `blocked-${worker.pid}`)
              const ports: Array<string> = []
              for (const worker of workers) {
                const diagnosis = yield* worker.diagnose(10_000)
                assert.strictEqual(diagnosis.signal, "SIGUSR1")
                // The primary fetched, from that inspector, the stack the loop is stuck in: the fixture's spin.
                assert.match(diagnosis.stack ?? "", /health-block\.js:\d+:\d+\)/, `no stack: ${diagnosis.stack}`)
                const found = yield* eventually(
                  () =>
                    lines
                      .filter((l) => l.pid === worker.pid)
                      .map((l) => /Debugger listening on ws:\/\/127\.0\.0\.1:(\d+)\//.exec(l.line)?.[1])
                      .find((port) => port !== undefined),
                  "15 seconds"
                )
                ports.push(found)
              }
              assert.notStrictEqual(ports[0], ports[1])
              // Any free port: also in the `--inspect-port` node:cluster appends for a worker using the inspector.
              for (const worker of workers) {
                const argv = readFileSync(`/proc/${worker.pid}/cmdline`, "utf8").split("\0")
                const chosen = argv.filter((arg) => arg.startsWith("--inspect-port="))
                assert.isAbove(chosen.length, 0)
                assert.deepStrictEqual([...new Set(chosen)], ["--inspect-port=0"])
              }
              // Still blocked, still alive: the diagnostic did not end it.
              for (const worker of workers) assert.isTrue(Option.isNone(yield* worker.exitStatus))
            })
          )
          yield* assertNoneLeft(tag)
        }).pipe(Effect.provide(layer))
    )
  }

  it.live("a command gets SIGABRT, the leader alone; once reaped nothing is sent", () =>
    Effect.gen(function* () {
      const { env, tag } = makeTag()
      yield* Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const spawner = yield* ProcessSpawner
          // The leader reports SIGABRT and exits 7; its `sleep` (same group) must not get it.
          const script = `sleep 300 & echo $! >"$1/sleep"; trap 'exit 7' ABRT; while :; do sleep 0.05; done`
          const handle = yield* spawner.spawn(
            request(env, { mode: "command", command: "/bin/sh", args: ["-c", script, "sh", dir] })
          )
          const sleeper = Number(yield* file(dir, "sleep", (s) => s.endsWith("\n")))
          assert.deepStrictEqual(yield* handle.diagnose(1000), { signal: "SIGABRT" })
          assert.deepStrictEqual(yield* handle.exit, ExitStatus.exited(7))
          assert.doesNotThrow(() => process.kill(sleeper, 0))
          const kills = vi.spyOn(process, "kill")
          yield* Effect.addFinalizer(() => Effect.sync(() => kills.mockRestore()))
          assert.deepStrictEqual(yield* handle.diagnose(1000), { signal: "SIGABRT" })
          assert.deepStrictEqual(
            kills.mock.calls.filter(([pid]) => pid === handle.pid),
            []
          )
        })
      )
      yield* assertNoneLeft(tag)
    }).pipe(Effect.provide(layer))
  )
})
