/**
 * The command line as typed, end to end: a `--` after the command is the
 * command's own, never prefork's (each case runs the real bin once).
 */
import { readFileSync, writeFileSync } from "node:fs"
import * as Path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { tempDir } from "../helpers/supervise.ts"
import { fixture, prefork } from "./prefork.ts"

const cases: ReadonlyArray<readonly [string, ReadonlyArray<string>, ReadonlyArray<string>]> = [
  ["options and a -- after the command", ["--port", "80", "--", "x"], ["--port", "80", "--", "x"]],
  ["the command's own --", ["--", "a", "b"], ["--", "a", "b"]],
  ["-e and -n after the command", ["-e", "x", "-n", "3"], ["-e", "x", "-n", "3"]]
]

describe("prefork's command line, end to end (real processes)", () => {
  for (const [what, args, seen] of cases) {
    it.live(`${what}: prefork -n 1 --restart never node write-args.js out.json ${args.join(" ")}`, () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const p = yield* prefork(
            ["-n", "1", "--restart", "never", "node", fixture("write-args.js"), "out.json", ...args],
            { cwd: dir }
          )
          assert.strictEqual((yield* p.exit).code, 0, p.stderr())
          assert.deepStrictEqual(JSON.parse(readFileSync(Path.join(dir, "out.json"), "utf8")), seen)
        })
      )
    )
  }

  it.live("a command that exists but is not executable exits 126; one that does not exist, 127", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const dir = yield* tempDir
        const script = Path.join(dir, "not-executable.sh")
        writeFileSync(script, "#!/bin/sh\necho hi\n", { mode: 0o644 })
        const denied = yield* prefork(["-n", "1", "--", script])
        assert.strictEqual((yield* denied.exit).code, 126, denied.stderr())
        const missing = yield* prefork(["-n", "1", "--", Path.join(dir, "no-such-program")])
        assert.strictEqual((yield* missing.exit).code, 127, missing.stderr())
      })
    )
  )
})
