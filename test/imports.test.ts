/**
 * The library's import path stays lean: no entry point loads `effect/Schema`
 * (or its AST, through `effect/Brand`), which costs a process ~13 MiB and
 * ~100 ms (docs/production.md). Each entry is imported in a fresh process
 * whose module loads are recorded by a hook.
 */
import { assert, describe, it } from "@effect/vitest"
import { spawnSync } from "node:child_process"
import { readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"

const ROOT = fileURLToPath(new URL("../", import.meta.url))

/** Every module URL loaded by importing `entry` (a path under the repository). */
const loadedBy = (entry: string): Array<string> => {
  const script = `
import { registerHooks } from "node:module"
const seen = []
registerHooks({ load(url, context, next) { seen.push(url); return next(url, context) } })
await import(${JSON.stringify(new URL(entry, `file://${ROOT}`).href)})
process.stdout.write(JSON.stringify(seen))
`
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], {
    cwd: ROOT,
    encoding: "utf8",
    timeout: 30_000,
    env: { ...process.env, NODE_OPTIONS: "" }
  })
  assert.strictEqual(r.status, 0, r.stderr)
  return JSON.parse(r.stdout)
}

const schemaModules = (urls: ReadonlyArray<string>) =>
  urls.filter((u) => /\/effect\/(?:src|dist)\/(?:Schema|SchemaAST|Brand)\.[jt]s$/.test(u))

describe("the import path", () => {
  for (const entry of ["src/index.ts", "src/node.ts", "src/testing.ts"]) {
    it(`${entry} loads no Schema`, () => {
      const loaded = loadedBy(entry)
      assert.isAbove(loaded.length, 10)
      assert.deepStrictEqual(schemaModules(loaded), [])
    })
  }

  it("a worker's modules (Worker, TaskId, Messages, Errors, ExitStatus) load neither the supervisor nor Stream", () => {
    const loaded = loadedBy("src/Worker.ts")
    assert.deepStrictEqual(schemaModules(loaded), [])
    for (const url of loaded)
      assert.notMatch(url, /\/src\/(?:Supervisor|internal\/loop)\.ts$|\/effect\/dist\/(?:Stream|PubSub)\.js$/)
    for (const entry of ["src/Errors.ts", "src/Messages.ts", "src/ExitStatus.ts", "src/TaskId.ts"]) {
      assert.deepStrictEqual(schemaModules(loadedBy(entry)), [], entry)
    }
  })

  it("no entry point loads @effect/platform-node (a devDependency: only the bundled command carries a copy)", () => {
    for (const entry of ["src/index.ts", "src/node.ts", "src/testing.ts"]) {
      const loaded = loadedBy(entry)
      assert.deepStrictEqual(
        loaded.filter((u) => u.includes("/@effect/platform-node")),
        [],
        entry
      )
    }
    const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"))
    assert.deepStrictEqual(Object.keys(pkg.dependencies ?? {}), [])
    // @effect/platform-node only for effect-prefork/http, which says so: an optional peer.
    assert.deepStrictEqual(Object.keys(pkg.peerDependencies), ["@effect/platform-node", "effect"])
    assert.deepStrictEqual(pkg.peerDependenciesMeta, { "@effect/platform-node": { optional: true } })
  })

  it("effect-prefork/http (src/http.ts) is the one entry point that loads @effect/platform-node; a worker's side only", () => {
    const loaded = loadedBy("src/http.ts")
    assert.isNotEmpty(loaded.filter((u) => u.includes("/@effect/platform-node/")))
    for (const url of loaded) {
      assert.notMatch(url, /\/src\/(?:Supervisor|internal\/loop|node\/NodeProcessSpawner|node\/Prefork)\.ts$/)
    }
    const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"))
    assert.deepStrictEqual(pkg.exports["./http"], { types: "./dist/http.d.ts", default: "./dist/http.js" })
  })

  it("Prefork, as a worker imports it, loads neither the supervisor nor the spawner (the primary loads them when it supervises)", () => {
    const loaded = loadedBy("src/node/Prefork.ts")
    for (const url of loaded) {
      assert.notMatch(url, /\/src\/(?:Supervisor|internal\/loop|node\/NodeProcessSpawner|node\/internal\/sockets)\.ts$/)
    }
  })
})
