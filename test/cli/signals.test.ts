/**
 * prefork's stop signals as an operator meets them: the signal is logged
 * before what it stops, a second Ctrl-C kills every worker at once (Docker's
 * and PM2's habit), and control signals while stopping are said to be ignored.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs"
import * as Path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { eventually, pidsWithTag } from "../helpers/procs.ts"
import { tempDir } from "../helpers/supervise.ts"
import { fixture, prefork, stderrHas } from "./prefork.ts"

describe("prefork: stopping, as an operator meets it (real processes)", () => {
  it.live(
    "a second SIGINT while stopping SIGKILLs workers that ignore SIGTERM, long before --stop-timeout; SIGHUP then is ignored, said so",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const p = yield* prefork(["-n", "2", "--stop-timeout", "120s", "--", "node", fixture("ignore-term.js"), dir])
          yield* eventually(
            () => (readdirSync(dir).filter((f) => f.startsWith("ready-")).length === 2 ? true : undefined),
            "10 seconds"
          )
          p.signal("SIGINT")
          yield* stderrHas(p, "Stopping 2 processes")
          p.signal("SIGHUP")
          yield* stderrHas(p, "SIGHUP received: stopping, ignored")
          p.signal("SIGINT")
          // Bounded by the helper's 20 s wait: far below the 120 s stop timeout the workers would otherwise get.
          const exit = yield* p.exit
          assert.strictEqual(exit.code, 0, p.stderr())
          assert.deepStrictEqual(pidsWithTag(p.tag), [])
          const said = p.stderr()
          assert.isBelow(said.indexOf("SIGINT received: stopping"), said.indexOf("Stopping 2 processes"))
          assert.include(said, "SIGINT received again: killing every worker now (SIGKILL)")
        })
      )
  )

  it.live("prefork says its own pid first, and --pid-file holds it while it runs, removed at exit", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const dir = yield* tempDir
        const file = Path.join(dir, "prefork.pid")
        const p = yield* prefork(["-n", "1", "--pid-file", file, "--", "node", fixture("forever.js")])
        yield* stderrHas(p, `prefork pid ${p.pid} (signal this one`)
        yield* eventually(() => (existsSync(file) ? true : undefined))
        assert.strictEqual(readFileSync(file, "utf8").trim(), String(p.pid))
        p.signal("SIGTERM")
        assert.strictEqual((yield* p.exit).code, 0, p.stderr())
        assert.isFalse(existsSync(file))
      })
    )
  )

  it.live("with --restart never, a slot that crashed and was then scaled away does not make prefork exit 1", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const dir = yield* tempDir
        // Task 1 exits 1 at once (not restarted); task 0 lives until SIGTERM.
        const p = yield* prefork(["-n", "2", "--restart", "never", "--", "node", fixture("cli-task-fails.js"), "1"], {
          cwd: dir
        })
        yield* stderrHas(p, "child 1 (pid")
        p.signal("SIGTTOU")
        yield* stderrHas(p, "Scaling from 2 to 1 process:")
        p.signal("SIGTERM")
        const exit = yield* p.exit
        assert.strictEqual(exit.code, 0, p.stderr())
        assert.notInclude(p.stderr(), "ended abnormally")
      })
    )
  )
})
