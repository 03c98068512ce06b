/**
 * Bundles the `prefork` command into one self-contained ES module,
 * dist/bin/prefork.js: src/cli/main.ts with Effect, @effect/platform-node and
 * the library inside, tree-shaken by rolldown, importing nothing but Node's
 * built-in modules. bin/prefork.js runs it. Loading one file instead of a few
 * hundred modules is most of the command's start-up time and memory
 * (docs/production.md has the figures).
 *
 *   node scripts/build-cli.mjs            # what `npm run build:cli`, `prepare` and `build` run
 *
 * Plain JavaScript, so that any Node >= 22 runs it; the sources it bundles are
 * TypeScript, which rolldown strips. The version is read from package.json
 * now and written into the bundle, which therefore reads no file and runs
 * from anywhere. The file is written under a temporary name and renamed, so
 * a `prefork` starting meanwhile never reads half of it.
 */
import { readFileSync, renameSync, mkdirSync, writeFileSync } from "node:fs"
import { builtinModules } from "node:module"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import { rolldown } from "rolldown"

const ROOT = Path.resolve(Path.dirname(fileURLToPath(import.meta.url)), "..")
const ENTRY = Path.join(ROOT, "src", "cli", "main.ts")
const VERSION_MODULE = Path.join(ROOT, "src", "cli", "Version.ts")
export const OUTPUT = Path.join(ROOT, "dist", "bin", "prefork.js")

const started = performance.now()
const { version } = JSON.parse(readFileSync(Path.join(ROOT, "package.json"), "utf8"))

let versionInlined = false
const bundle = await rolldown({
  input: ENTRY,
  platform: "node",
  // Only syntax every supported Node understands (package.json "engines").
  transform: { target: "node22" },
  logLevel: "warn",
  plugins: [
    {
      name: "prefork-version",
      load(id) {
        if (Path.resolve(id) !== VERSION_MODULE) return null
        versionInlined = true
        return `export const VERSION = ${JSON.stringify(version)}\n`
      }
    }
  ]
})
const { output } = await bundle.generate({
  format: "esm",
  // One file, even if a module is loaded lazily with import().
  codeSplitting: false,
  // Compressed, not mangled: a stack trace from the bundle still names its functions.
  minify: { compress: true, mangle: false, codegen: { removeWhitespace: true } },
  comments: { legal: true, annotation: false, jsdoc: false },
  postBanner: `/*! prefork ${version}: the command, bundled by scripts/build-cli.mjs from src/cli/main.ts */`
})
await bundle.close()

const chunks = output.filter((o) => o.type === "chunk")
if (chunks.length !== 1) throw new Error(`expected one file, rolldown produced ${chunks.length}`)
if (!versionInlined) throw new Error(`the bundle does not contain ${Path.relative(ROOT, VERSION_MODULE)}`)
const code = chunks[0].code

// Self-contained: every import must be one of Node's own modules.
const builtins = new Set(builtinModules)
const imported = [
  ...code.matchAll(/\bfrom\s*"([^"]+)"|\bimport\s*\(\s*"([^"]+)"\s*\)|\brequire\s*\(\s*"([^"]+)"\s*\)/g)
].map((m) => m[1] ?? m[2] ?? m[3])
const foreign = [...new Set(imported.filter((s) => !s.startsWith("node:") && !builtins.has(s)))]
if (foreign.length > 0) throw new Error(`the bundle still imports ${foreign.join(", ")}`)

mkdirSync(Path.dirname(OUTPUT), { recursive: true })
const temporary = `${OUTPUT}.${process.pid}.tmp`
writeFileSync(temporary, code)
renameSync(temporary, OUTPUT)
// On stderr: stdout may be a machine's (`npm pack --json` runs this as `prepare`).
process.stderr.write(
  `build-cli: ${Path.relative(ROOT, OUTPUT)} (${Math.round(code.length / 1024)} KiB) in ${Math.round(performance.now() - started)} ms\n`
)
