/**
 * The preload's source travels in the environment, not on the command line:
 * `ps` shows a Node worker's command with one short `--import`, and the
 * worker's own code sees neither the source (PREFORK_PRELOAD is removed before
 * it runs) nor anything but that short option in `process.execArgv`. Checked
 * in the three modes that preload a Node worker: module, cluster, and the
 * command `node app.js`.
 */
import { readFileSync } from "node:fs"
import * as Path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
import { assertNoneLeft, eventually } from "../helpers/procs.ts"
import { fixture, started, supervise, tempDir } from "../helpers/supervise.ts"

const read = (path: string): string | undefined => {
  try {
    return readFileSync(path, "utf8")
  } catch {
    return undefined
  }
}

describe("the preload on a worker's command line (real processes)", () => {
  for (const mode of ["module", "cluster", "command"] as const) {
    it.live(`${mode} mode: the command line is short and the worker's code never sees the source`, () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const out = Path.join(dir, "preload")
          const scope = yield* Scope.make()
          const options = { processes: 1, env: { PRELOAD_OUT: out } }
          const { events, handle, tag } = yield* Scope.provide(scope)(
            supervise(
              mode === "command"
                ? { ...options, command: process.execPath, args: [fixture("preload-env.js")] }
                : { ...options, mode, command: fixture("preload-env.js") }
            )
          )
          const pid = (yield* eventually(() => started(events)[0])).pid
          const seen = yield* eventually(() => read(`${out}-${pid}`))
          // Through a wrapper (setpriv, the watchdog's chain) the pid is the worker's by the time it wrote.
          const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")
          yield* handle.stop
          yield* Scope.close(scope, Exit.void)
          yield* assertNoneLeft(tag)

          const report = JSON.parse(seen) as { preload: string | null; execArgv: ReadonlyArray<string> }
          assert.isNull(report.preload, "PREFORK_PRELOAD is removed before the worker's code runs")
          const imports = cmdline.filter((arg) => arg.startsWith("--import="))
          assert.strictEqual(imports.length, 1, cmdline.join(" "))
          assert.isBelow(imports[0]!.length, 300, imports[0])
          assert.notInclude(cmdline.join(" "), "effect-prefork/heartbeat")
          assert.isBelow(cmdline.join(" ").length, 600, cmdline.join(" "))
          assert.isTrue(cmdline.some((arg) => arg.endsWith("preload-env.js")))
          assert.isTrue(report.execArgv.every((arg) => arg.length < 300))
        })
      )
    )
  }
})
