/**
 * The `prefork` command as users get it: one bundled file, dist/bin/prefork.js
 * (scripts/build-cli.mjs, run by vitest's global setup), that needs no
 * TypeScript, no node_modules and no particular Node, and that `npm pack`
 * ships. The behaviour of the command is tested in prefork.test.ts, through
 * bin/prefork.js, which runs this bundle.
 */
import { assert, describe, it } from "@effect/vitest"
import { execFileSync, spawnSync } from "node:child_process"
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync
} from "node:fs"
import { builtinModules } from "node:module"
import { tmpdir } from "node:os"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import { MINIMUM_NODE_MAJOR, refuseNode } from "../../src/cli/Engines.ts"

const ROOT = fileURLToPath(new URL("../../", import.meta.url))
const BUNDLE = Path.join(ROOT, "dist", "bin", "prefork.js")
const BIN = Path.join(ROOT, "bin", "prefork.js")
const VERSION: string = JSON.parse(readFileSync(Path.join(ROOT, "package.json"), "utf8")).version

/** Rebuilds the bundle if a source changed since the global setup built it (someone editing meanwhile). */
const freshBundle = (): string => {
  const src = Path.join(ROOT, "src")
  const newest = Math.max(
    statSync(Path.join(ROOT, "package.json")).mtimeMs,
    ...readdirSync(src, { recursive: true, encoding: "utf8" })
      .filter((f) => f.endsWith(".ts"))
      .map((f) => statSync(Path.join(src, f)).mtimeMs)
  )
  if (!existsSync(BUNDLE) || statSync(BUNDLE).mtimeMs < newest) {
    execFileSync(process.execPath, [Path.join(ROOT, "scripts", "build-cli.mjs")], { stdio: "ignore", timeout: 120_000 })
  }
  return BUNDLE
}

/** Runs `node …args` (bounded), with PREFORK_TASK_ID and NODE_OPTIONS out of the way. */
const run = (node: string, args: ReadonlyArray<string>, cwd: string) => {
  const env: Record<string, string | undefined> = { ...process.env, NO_COLOR: "1" }
  delete env["NODE_OPTIONS"]
  delete env["PREFORK_TASK_ID"]
  const r = spawnSync(node, args, { cwd, env, encoding: "utf8", timeout: 20_000 })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, error: r.error }
}

/** Two workers that print their task id and exit 0: prefork exits 0 once both did. */
const twoWorkers = (node: string) => ["-n", "2", "--", node, "-e", "console.log('task ' + process.env.PREFORK_TASK_ID)"]

/** The machine's own `node` (on PATH, outside any node_modules/.bin), if there is one. */
const machineNode = (): string | undefined => {
  for (const dir of (process.env["PATH"] ?? "").split(Path.delimiter)) {
    if (dir === "" || dir.split(Path.sep).includes("node_modules")) continue
    const candidate = Path.join(dir, "node")
    if (existsSync(candidate) && candidate !== process.execPath) return candidate
  }
  return undefined
}

describe("the bundled command", () => {
  it("is one ES module that imports nothing but Node's own modules", () => {
    const code = readFileSync(freshBundle(), "utf8")
    const imports = [...code.matchAll(/\bfrom\s*"([^"]+)"|\bimport\s*\(\s*"([^"]+)"\s*\)/g)].map((m) => m[1] ?? m[2])
    assert.isAbove(imports.length, 0)
    const builtins = new Set(builtinModules)
    for (const specifier of imports) {
      assert.isTrue(specifier!.startsWith("node:") || builtins.has(specifier!), specifier)
    }
    assert.notInclude(code, '.ts"')
    assert.include(code, `prefork ${VERSION}`)
  })

  it("runs from a copy outside the repository, with type stripping off", () => {
    const dir = mkdtempSync(Path.join(tmpdir(), "prefork-bundle-"))
    try {
      const copy = Path.join(dir, "prefork.mjs")
      copyFileSync(freshBundle(), copy)
      const flags = ["--no-experimental-strip-types", copy]
      const version = run(process.execPath, [...flags, "--version"], dir)
      assert.strictEqual(version.stdout.trim(), `prefork v${VERSION}`, version.stderr)
      assert.strictEqual(version.code, 0)
      const help = run(process.execPath, [...flags, "--help"], dir)
      assert.strictEqual(help.code, 0)
      assert.include(help.stdout, "--max-restarts")
      const workers = run(process.execPath, [...flags, ...twoWorkers(process.execPath)], dir)
      assert.strictEqual(workers.code, 0, workers.stderr)
      assert.match(workers.stdout, /^\[0:\d+\] task 0$/m)
      assert.match(workers.stdout, /^\[1:\d+\] task 1$/m)
      assert.include(workers.stderr, "Every worker exited normally (0 restarts)")
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it("bin/prefork.js runs the bundle, not the TypeScript sources", () => {
    freshBundle()
    // With type stripping off, only the bundle can answer.
    const version = run(process.execPath, ["--no-experimental-strip-types", BIN, "--version"], ROOT)
    assert.strictEqual(version.stdout.trim(), `prefork v${VERSION}`, version.stderr)
    assert.strictEqual(version.code, 0)
  })

  it("bin/prefork.js picks the bundle, or in a checkout the sources when they are newer", () => {
    // A stand-in package: bin/prefork.js as shipped, a "bundle" and "sources" that say which ran.
    const make = (root: string) => {
      mkdirSync(Path.join(root, "bin"), { recursive: true })
      mkdirSync(Path.join(root, "dist", "bin"), { recursive: true })
      mkdirSync(Path.join(root, "src", "cli"), { recursive: true })
      copyFileSync(BIN, Path.join(root, "bin", "prefork.js"))
      writeFileSync(Path.join(root, "package.json"), `{ "type": "module" }\n`)
      writeFileSync(Path.join(root, "src", "cli", "main.ts"), `const ran: string = "sources"\nconsole.log(ran)\n`)
      writeFileSync(Path.join(root, "dist", "bin", "prefork.js"), `console.log("bundle")\n`)
      const past = new Date(Date.now() - 60_000)
      for (const f of ["package.json", "src/cli/main.ts"]) utimesSync(Path.join(root, f), past, past)
      return Path.join(root, "bin", "prefork.js")
    }
    const dir = mkdtempSync(Path.join(tmpdir(), "prefork-bin-"))
    try {
      const checkout = make(Path.join(dir, "checkout"))
      const ran = (bin: string, ...flags: Array<string>) => run(process.execPath, [...flags, bin], dir)
      assert.strictEqual(ran(checkout).stdout.trim(), "bundle")
      const source = Path.join(dir, "checkout", "src", "cli", "main.ts")
      utimesSync(source, new Date(), new Date(Date.now() + 5_000))
      assert.strictEqual(ran(checkout).stdout.trim(), "sources")
      const refused = ran(checkout, "--no-experimental-strip-types")
      assert.strictEqual(refused.code, 1)
      assert.include(refused.stderr, "run `npm run build:cli`")
      // Installed (under node_modules), the bundle runs whatever the dates.
      const installed = make(Path.join(dir, "node_modules", "effect-prefork"))
      utimesSync(
        Path.join(dir, "node_modules", "effect-prefork", "src", "cli", "main.ts"),
        new Date(),
        new Date(Date.now() + 5_000)
      )
      assert.strictEqual(ran(installed).stdout.trim(), "bundle")
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it("refuses a Node older than package.json's engines", () => {
    const engines: string = JSON.parse(readFileSync(Path.join(ROOT, "package.json"), "utf8")).engines.node
    assert.strictEqual(engines, `>=${MINIMUM_NODE_MAJOR}`)
    assert.isUndefined(refuseNode(`v${MINIMUM_NODE_MAJOR}.0.0`, "/usr/bin/node"))
    assert.isUndefined(refuseNode("v24.21.0", "/usr/bin/node"))
    const refused = refuseNode(`v${MINIMUM_NODE_MAJOR - 1}.99.1`, "/opt/node")
    assert.include(refused, `Node.js >= ${MINIMUM_NODE_MAJOR} is required`)
    assert.include(refused, `/opt/node is v${MINIMUM_NODE_MAJOR - 1}.99.1`)
  })

  const node = machineNode()
  const machineMajor =
    node === undefined ? undefined : Number(/^v(\d+)/.exec(run(node, ["--version"], ROOT).stdout)?.[1])
  it.skipIf(node === undefined)(
    `bin/prefork.js with the machine's own Node (${node ?? "none found"}, ${machineMajor ?? "?"}): runs it if >= ${MINIMUM_NODE_MAJOR}, else exits 2 saying why`,
    () => {
      freshBundle()
      const r = run(node!, [BIN, ...twoWorkers(node!)], ROOT)
      if (machineMajor! >= MINIMUM_NODE_MAJOR) {
        assert.strictEqual(r.code, 0, `with ${node}: ${r.stderr}`)
        assert.match(r.stdout, /^\[1:\d+\] task 1$/m)
      } else {
        assert.strictEqual(r.code, 2, r.stderr)
        assert.include(r.stderr, `prefork: Node.js >= ${MINIMUM_NODE_MAJOR} is required`)
        assert.strictEqual(r.stdout, "")
        // ctl too: nothing runs on an older Node.
        const ctl = run(node!, [BIN, "ctl", "status"], ROOT)
        assert.strictEqual(ctl.code, 2, ctl.stderr)
      }
    }
  )

  it("is in the package npm packs", () => {
    freshBundle()
    const r = spawnSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], {
      cwd: ROOT,
      encoding: "utf8",
      timeout: 60_000
    })
    assert.strictEqual(r.status, 0, r.stderr)
    const files: Array<string> = JSON.parse(r.stdout)[0].files.map((f: { path: string }) => f.path)
    assert.include(files, "bin/prefork.js")
    assert.include(files, "dist/bin/prefork.js")
    // The command's modules ship only inside the bundle: nothing else imports @effect/platform-node.
    assert.deepStrictEqual(
      files.filter((f) => f.startsWith("dist/cli/") || f.startsWith("src/cli/")),
      []
    )
    assert.notInclude(files, "scripts/prepare.mjs")
  })
})
