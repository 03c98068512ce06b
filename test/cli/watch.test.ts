/**
 * `prefork --watch` with real file changes: a burst of writes is one rolling
 * reload, ignored paths never count, and every worker is replaced.
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs"
import * as Path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { eventually, pidsWithTag } from "../helpers/procs.ts"
import { tempDir } from "../helpers/supervise.ts"
import { fixture, prefork, stderrHas } from "./prefork.ts"

describe("prefork --watch (real processes, real files)", () => {
  it.live("a burst of changes is one reload; node_modules and --watch-ignore never count; every worker replaced", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const dir = yield* tempDir
        const src = Path.join(dir, "src")
        mkdirSync(Path.join(src, "node_modules"), { recursive: true })
        writeFileSync(Path.join(src, "app.js"), "1")
        const p = yield* prefork([
          "-n",
          "2",
          "--watch",
          src,
          "--watch-ignore",
          "*.log",
          "--watch-debounce",
          "200ms",
          "--",
          "node",
          fixture("forever.js")
        ])
        yield* stderrHas(p, "Starting 2 processes")
        yield* stderrHas(p, `Watching ${src} for changes`)
        // The workers themselves (not prefork or the watchdog, which also carry the tag), once both are spawned.
        const workers = () =>
          pidsWithTag(p.tag).filter((pid) => {
            // prefork's own command line names the worker's script too.
            if (pid === p.pid) return false
            try {
              return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("forever.js")
            } catch {
              return false
            }
          })
        const before = yield* eventually(() => (workers().length === 2 ? workers() : undefined), "10 seconds")
        // Ignored changes first, then a burst of real ones: the one reload names only the real file.
        writeFileSync(Path.join(src, "node_modules", "dep.js"), "x")
        writeFileSync(Path.join(src, "debug.log"), "x")
        for (let i = 0; i < 5; i++) writeFileSync(Path.join(src, "app.js"), String(i))
        yield* stderrHas(p, "Reload finished", "20 seconds")
        const changed = p
          .stderr()
          .split("\n")
          .filter((l) => l.includes("changed: reloading"))
        assert.strictEqual(changed.length, 1, p.stderr())
        assert.include(changed[0], "app.js")
        assert.notInclude(changed[0], "node_modules")
        assert.notInclude(changed[0], "debug.log")
        const after = workers()
        assert.isTrue(
          before.some((pid) => !after.includes(pid)),
          `workers were not replaced: ${before} -> ${after}`
        )
        p.signal("SIGTERM")
        assert.strictEqual((yield* p.exit).code, 0, p.stderr())
      })
    )
  )

  it.live("a watched file is named as itself when it changes (not joined with its own name)", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const dir = yield* tempDir
        const file = Path.join(dir, "leak.js")
        writeFileSync(file, "1")
        const p = yield* prefork(["--watch", file, "--watch-debounce", "100ms", "--", "node", fixture("forever.js")])
        yield* stderrHas(p, `Watching ${file} for changes`)
        writeFileSync(file, "2")
        yield* stderrHas(p, "Reload finished", "20 seconds")
        const changed = p
          .stderr()
          .split("\n")
          .filter((l) => l.includes("changed: reloading"))
        assert.strictEqual(changed.length, 1, p.stderr())
        assert.match(changed[0]!, new RegExp(`INFO ${file} changed: reloading \\d+ process`))
        assert.notInclude(changed[0], "leak.js/leak.js")
        p.signal("SIGTERM")
        assert.strictEqual((yield* p.exit).code, 0, p.stderr())
      })
    )
  )

  it.live("a path that cannot be watched is a usage error (exit 2)", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const p = yield* prefork(["--watch", "/no/such/dir/here", "--", "node", fixture("forever.js")])
        assert.strictEqual((yield* p.exit).code, 2, p.stderr())
        assert.include(p.stderr(), "--watch: cannot watch /no/such/dir/here")
      })
    )
  )
})
