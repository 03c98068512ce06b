/**
 * docs/cli.md cannot rot: its worked example (the worker's code, each
 * `prefork … -- node flaky.js` command and the output shown after it) is run
 * here and compared, up to pids, times and the order of lines.
 */
import { readFileSync, writeFileSync } from "node:fs"
import * as Path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { tempDir } from "../helpers/supervise.ts"
import { prefork } from "./prefork.ts"

const doc = readFileSync(new URL("../../docs/cli.md", import.meta.url), "utf8")
const blocks = [...doc.matchAll(/```(\w*)\n([\s\S]*?)```/g)].map((m) => ({ lang: m[1]!, text: m[2]! }))
const worker = blocks.find((b) => b.lang === "js" && b.text.includes("cannot reach the database"))!.text
const runs = blocks.flatMap((b, i) =>
  b.lang === "sh" && /^prefork .* -- node flaky\.js\n$/.test(b.text)
    ? [{ args: b.text.trim().split(" ").slice(1), output: blocks[i + 1]!.text }]
    : []
)

const normalize = (text: string) =>
  text
    .split("\n")
    .filter((line) => line.length > 0)
    .map((line) =>
      line
        .replace(/^\[prefork \d\d:\d\d:\d\d\.\d{3}\]/, "[prefork T]")
        .replace(/^\[(\d+):\d+\]/, "[$1:PID]")
        .replace(/pid \d+/g, "pid PID")
    )
    .sort()

describe("docs/cli.md", () => {
  it("has the worked example's runs", () => {
    assert.strictEqual(runs.length, 2)
  })

  for (const run of runs) {
    it.live(`the output shown for \`prefork ${run.args.join(" ")}\` is the real one`, () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          writeFileSync(Path.join(dir, "flaky.js"), worker)
          const p = yield* prefork(run.args, { cwd: dir })
          const { code } = yield* p.exit
          assert.strictEqual(code, run.args.includes("never") ? 1 : 3, p.stderr())
          assert.deepStrictEqual(normalize(p.stdout() + p.stderr()), normalize(run.output))
        })
      )
    )
  }
})
