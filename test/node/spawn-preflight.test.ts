/**
 * Workers that cannot start are a typed `SpawnFailed`, decided before any
 * process is created where that can be known, and never a crash of the
 * primary nor a restart loop:
 *
 * - a script whose `#!` interpreter is missing (also `#!/usr/bin/env NAME`
 *   with NAME not in PATH) or not executable, and a file without execute
 *   permission. Through `setpriv`, these used to start (setpriv runs) and
 *   exit 127 or 126 at once, again and again;
 * - a `setpriv` without `--pdeathsig` (util-linux before ~2.33) is found out
 *   by a probe when the layer is built, and not used;
 * - FAULTS.md row 36: a cluster or module worker that cannot be forked
 *   (`ulimit -n` tiny: EMFILE). The cluster `Worker`'s `'error'` used to have
 *   no listener, and crashed the primary. A shortage is now retried, never
 *   fatal (see spawn-transient.test.ts).
 */
import { chmodSync, writeFileSync } from "node:fs"
import * as Path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Layer } from "effect"
import * as ExitStatus from "../../src/ExitStatus.ts"
import { probeSetpriv } from "../../src/node/internal/preflight.ts"
import * as NodeProcessSpawner from "../../src/node/NodeProcessSpawner.ts"
import { ProcessSpawner, type SpawnRequest } from "../../src/ProcessSpawner.ts"
import * as Supervisor from "../../src/Supervisor.ts"
import { TaskId } from "../../src/TaskId.ts"
import { awaitExit, spawnPrimary, waitLine } from "../helpers/primary.ts"
import { assertNoneLeft, makeTag, pidsWithTag } from "../helpers/procs.ts"
import { fixture, quiet, tempDir } from "../helpers/supervise.ts"

const paths = [
  ["setpriv", NodeProcessSpawner.layerWith({ watchdog: false })],
  ["watchdog", NodeProcessSpawner.layerWith({ parentDeathSignal: false, watchdog: true })]
] as const

/** Writes an executable file (mode 755 unless said otherwise) into `dir`. */
const script = (dir: string, name: string, text: string, mode = 0o755): string => {
  const file = Path.join(dir, name)
  writeFileSync(file, text)
  chmodSync(file, mode)
  return file
}

const request = (command: string, env: Record<string, string>): SpawnRequest => ({
  taskId: TaskId(0),
  mode: "command",
  command,
  args: [],
  env,
  stdio: "ignore",
  readiness: "spawn",
  stopTimeout: Duration.seconds(1)
})

for (const [path, layer] of paths) {
  describe(`executables that cannot run, ${path} path: a SpawnFailed before any process exists`, () => {
    const failure = (make: (dir: string) => string, extraEnv: Record<string, string> = {}) =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const { env, tag } = makeTag()
        const spawner = yield* ProcessSpawner
        const error = yield* Effect.flip(spawner.spawn(request(make(dir), { ...env, ...extraEnv })))
        assert.deepStrictEqual(pidsWithTag(tag), [])
        return error
      })

    it.live("a #! interpreter that does not exist: ENOENT, naming the interpreter", () =>
      Effect.scoped(
        Effect.gen(function* () {
          const error = yield* failure((dir) => script(dir, "py", "#!/usr/bin/prefork-no-python -u\nprint(1)\n"))
          assert.strictEqual(error.code, "ENOENT")
          assert.match(error.message, /#! interpreter \/usr\/bin\/prefork-no-python does not exist/)
        }).pipe(Effect.provide(layer))
      )
    )

    it.live("#!/usr/bin/env NAME with NAME not in the worker's PATH: ENOENT, naming NAME", () =>
      Effect.scoped(
        Effect.gen(function* () {
          const error = yield* failure((dir) => script(dir, "tool", "#!/usr/bin/env prefork-no-such-tool\n"))
          assert.strictEqual(error.code, "ENOENT")
          assert.match(error.message, /#! interpreter prefork-no-such-tool .* was not found in PATH/)
          // `env -S` and assignments are skipped as env itself does.
          const split = yield* failure((dir) => script(dir, "tool-s", "#!/usr/bin/env -S A=1 prefork-no-tool -x\n"))
          assert.strictEqual(split.code, "ENOENT")
          assert.match(split.message, /prefork-no-tool/)
        }).pipe(Effect.provide(layer))
      )
    )

    it.live("an interpreter that is not executable, or a file without execute permission: EACCES", () =>
      Effect.scoped(
        Effect.gen(function* () {
          const interpreter = yield* failure((dir) =>
            script(dir, "run", `#!${script(dir, "interp", "#!/bin/sh\n", 0o644)}\n`)
          )
          assert.strictEqual(interpreter.code, "EACCES")
          assert.match(interpreter.message, /#! interpreter .*interp is not an executable file/)
          const file = yield* failure((dir) => script(dir, "plain", "#!/bin/sh\nexit 0\n", 0o644))
          assert.strictEqual(file.code, "EACCES")
        }).pipe(Effect.provide(layer))
      )
    )

    it.live("scripts that can run still do: #!/bin/sh, #!/usr/bin/env sh, an interpreter that is a script itself", () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const { env } = makeTag()
          const spawner = yield* ProcessSpawner
          const shell = script(dir, "a", "#!/bin/sh\nexit 3\n")
          const viaEnv = script(dir, "b", "#!/usr/bin/env sh\nexit 4\n")
          // Linux runs an interpreter that is itself a #! script (nested interpreters).
          const nested = script(dir, "c", `#!${script(dir, "sh-wrapper", '#!/bin/sh\nexec /bin/sh "$@"\n')}\nexit 5\n`)
          for (const [file, code] of [
            [shell, 3],
            [viaEnv, 4],
            [nested, 5]
          ] as const) {
            const handle = yield* spawner.spawn(request(file, env))
            assert.deepStrictEqual(yield* handle.exit, ExitStatus.exited(code))
          }
        }).pipe(Effect.provide(layer))
      )
    )

    it.live("through the supervisor: a typed SpawnFailed at once, not a restart loop of exits 127", () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const { env, tag } = makeTag()
          const error = yield* Effect.flip(
            Supervisor.run({
              processes: 2,
              command: script(dir, "py", "#!/usr/bin/prefork-no-python\n"),
              env,
              stdio: "ignore",
              maxRestarts: 3
            })
          )
          assert.strictEqual(error._tag, "SpawnFailed")
          if (error._tag === "SpawnFailed") assert.strictEqual(error.code, "ENOENT")
          assert.deepStrictEqual(pidsWithTag(tag), [])
        }).pipe(Effect.provide(Layer.merge(layer, quiet)))
      )
    )
  })
}

describe("the setpriv probe", () => {
  it.live("the real setpriv passes; one without --pdeathsig (util-linux < 2.33), or none at all, does not", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const dir = yield* tempDir
        const setpriv = NodeProcessSpawner.findSetpriv()
        if (setpriv !== undefined) assert.isTrue(yield* probeSetpriv(setpriv))
        const old = script(
          dir,
          "setpriv",
          `#!/bin/sh\ncase "$1" in --pdeathsig) echo "setpriv: unrecognized option '--pdeathsig'" >&2; exit 1 ;; esac\nexec "$@"\n`
        )
        assert.isFalse(yield* probeSetpriv(old))
        assert.isFalse(yield* probeSetpriv(Path.join(dir, "missing")))
      })
    )
  )
})

describe("row 36: a worker that cannot be forked (ulimit -n 40, 20 workers)", () => {
  for (const mode of ["cluster", "module"] as const) {
    it.live(`${mode} mode: EMFILE is retried; the primary lives, and stopped, stops what it started and exits 0`, () =>
      Effect.scoped(
        Effect.gen(function* () {
          const primary = yield* spawnPrimary(
            "primary.ts",
            [
              JSON.stringify({
                mode,
                processes: 20,
                command: fixture("forever.js"),
                stdio: "ignore",
                ready: "spawn",
                maxRestarts: 3
              })
            ],
            { ulimitNofile: 40 }
          )
          yield* waitLine(primary, /cannot start child \d+ .*EMFILE: .*; retrying in/, "20 seconds")
          assert.isUndefined(primary.exited(), primary.lines.join("\n"))
          process.kill(primary.pid, "SIGTERM")
          const exit = yield* awaitExit(primary, "20 seconds")
          const output = primary.lines.join("\n")
          // Not Node's "Unhandled 'error' event": the primary handled the failure, and retried it.
          assert.deepStrictEqual(exit, { code: 0, signal: null }, output)
          assert.notMatch(output, /Unhandled 'error' event|SpawnFailed/)
          const started = primary.events().filter((e) => e._tag === "Started")
          assert.isAbove(started.length, 0)
          assert.isBelow(started.length, 20)
          // Every worker it started is gone (their Exited events end with the event stream, at the SIGTERM).
          yield* assertNoneLeft(primary.tag)
        })
      )
    )
  }
})
