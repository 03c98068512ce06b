/**
 * The TypeScript examples in README.md and docs/*.md are type-checked against
 * the sources, so the docs cannot drift from the API: each ```ts block becomes
 * a module (imports of `effect-prefork` pointed at `src/`), and `tsc` checks
 * them all with the project's strict settings.
 */
import { execFileSync, spawnSync } from "node:child_process"
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import { assert, describe, it } from "@effect/vitest"

const root = fileURLToPath(new URL("..", import.meta.url))
const out = Path.join(root, "node_modules", ".docs-check")
const sources = [
  "README.md",
  ...readdirSync(Path.join(root, "docs"))
    .filter((f) => f.endsWith(".md"))
    .map((f) => `docs/${f}`)
]

const entry: Record<string, string> = {
  "effect-prefork": "src/index.ts",
  "effect-prefork/node": "src/node.ts",
  "effect-prefork/testing": "src/testing.ts",
  "effect-prefork/http": "src/http.ts"
}

/** The ```ts blocks of a markdown file, with the package's imports pointed at the sources. */
const examples = (file: string): Array<string> =>
  [...readFileSync(Path.join(root, file), "utf8").matchAll(/^```ts\n([\s\S]*?)^```/gm)].map(([, code]) =>
    code!.replace(
      /from "(effect-prefork(?:\/node|\/testing|\/http)?)"/g,
      (_, name: string) => `from "${Path.relative(out, Path.join(root, entry[name]!))}"`
    )
  )

describe("documentation examples", () => {
  it("every TypeScript example in the docs type-checks", () => {
    rmSync(out, { recursive: true, force: true })
    mkdirSync(out, { recursive: true })
    let count = 0
    for (const file of sources) {
      examples(file).forEach((code, i) => {
        count++
        // Each block is a module of its own (`export {}`), so names may repeat across blocks.
        writeFileSync(Path.join(out, `${file.replace(/[/.]/g, "_")}_${i + 1}.ts`), `${code}\nexport {}\n`)
      })
    }
    writeFileSync(
      Path.join(out, "tsconfig.json"),
      JSON.stringify({
        extends: Path.join(root, "tsconfig.json"),
        compilerOptions: { noUnusedLocals: false },
        include: ["*.ts"]
      })
    )
    assert.isAtLeast(count, 10)
    let report = ""
    try {
      execFileSync(Path.join(root, "node_modules", ".bin", "tsc"), ["-p", Path.join(out, "tsconfig.json")], {
        encoding: "utf8"
      })
    } catch (error) {
      report = String((error as { stdout?: string }).stdout ?? error)
    }
    assert.strictEqual(report, "", report)
  })
})

describe("deployment recipes", () => {
  const analyze = "/usr/bin/systemd-analyze"
  const has = (() => {
    try {
      execFileSync(analyze, ["--version"], { stdio: "ignore" })
      return true
    } catch {
      return false
    }
  })()

  it.skipIf(!has)("the systemd units of docs/deployment.md pass systemd-analyze verify", () => {
    const text = readFileSync(Path.join(root, "docs", "deployment.md"), "utf8")
    const units = [...text.matchAll(/^```ini\n# \/etc\/systemd\/system\/([\w.-]+)\n([\s\S]*?)^```/gm)]
    assert.deepStrictEqual(
      units.map(([, name]) => name),
      ["app.socket", "app.service"]
    )
    const dir = Path.join(out, "units")
    rmSync(dir, { recursive: true, force: true })
    mkdirSync(dir, { recursive: true })
    for (const [, name, body] of units) writeFileSync(Path.join(dir, name!), body!)
    // verify prints what it does not accept (unknown keys, bad values) on stderr, even when it exits 0: nothing, then.
    const run = spawnSync(analyze, ["verify", ...units.map(([, name]) => Path.join(dir, name!))], {
      encoding: "utf8",
      timeout: 30_000
    })
    const said = `${run.stderr ?? ""}${run.error === undefined ? "" : String(run.error)}`
    assert.strictEqual(run.status, 0, said)
    assert.strictEqual(said, "")
  })
})
