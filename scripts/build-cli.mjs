/**
 * Bundles the `prefork` command: src/cli/main.ts with Effect,
 * @effect/platform-node and the library inside, tree-shaken by rolldown,
 * importing nothing but Node's built-in modules, into dist/bin/prefork.js.
 * bin/prefork.js runs it. Loading one file instead of a few hundred modules
 * is most of the command's start-up time and memory (docs/production.md has
 * the figures).
 *
 *   node scripts/build-cli.mjs            # what `npm run build:cli`, `prepare` and `build` run
 *
 * Plain JavaScript, so that any Node >= 22 runs it; the sources it bundles are
 * TypeScript, which rolldown strips. The version is read from package.json
 * now and written into the bundle, which therefore reads no file and runs
 * from anywhere. {@link bundleProgram} is exported so that the benchmarks
 * bundle their floors (bench/fixtures/floor-*.ts) exactly as the command is.
 */
import { readFileSync, renameSync, mkdirSync, writeFileSync } from "node:fs"
import { builtinModules } from "node:module"
import * as Path from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"
import { rolldown } from "rolldown"

const ROOT = Path.resolve(Path.dirname(fileURLToPath(import.meta.url)), "..")
const ENTRY = Path.join(ROOT, "src", "cli", "main.ts")
const VERSION_MODULE = Path.join(ROOT, "src", "cli", "Version.ts")
export const OUTPUT = Path.join(ROOT, "dist", "bin", "prefork.js")
const { version } = JSON.parse(readFileSync(Path.join(ROOT, "package.json"), "utf8"))

/**
 * Bundles `input` into the one self-contained ES module `output`, with the
 * command's options: Node 22's syntax, src/cli/Version.ts replaced by the
 * package's version, compressed but not mangled (a stack trace from the
 * bundle still names its functions), a module loaded with `import()` inlined.
 * The file is written under a temporary name and renamed, so a process
 * starting meanwhile never reads half of it. Resolves with its size in bytes.
 */
export const bundleProgram = async ({ input, output, banner }) => {
  let versionInlined = false
  const bundle = await rolldown({
    input,
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
  const { output: files } = await bundle.generate({
    format: "esm",
    // One file, even if a module is loaded lazily with import().
    codeSplitting: false,
    minify: { compress: true, mangle: false, codegen: { removeWhitespace: true } },
    comments: { legal: true, annotation: false, jsdoc: false },
    postBanner: banner
  })
  await bundle.close()

  const chunks = files.filter((o) => o.type === "chunk")
  if (chunks.length !== 1) throw new Error(`expected one file, rolldown produced ${chunks.length}`)
  const code = chunks[0].code
  // Self-contained: every import must be one of Node's own modules.
  const builtins = new Set(builtinModules)
  const imported = [
    ...code.matchAll(/\bfrom\s*"([^"]+)"|\bimport\s*\(\s*["`]([^"`]+)["`]\s*\)|\brequire\s*\(\s*["`]([^"`]+)["`]\s*\)/g)
  ].map((m) => m[1] ?? m[2] ?? m[3])
  const foreign = [...new Set(imported.filter((s) => !s.startsWith("node:") && !builtins.has(s)))]
  if (foreign.length > 0) throw new Error(`${Path.basename(output)} still imports ${foreign.join(", ")}`)

  mkdirSync(Path.dirname(output), { recursive: true })
  const temporary = `${output}.${process.pid}.tmp`
  writeFileSync(temporary, code)
  renameSync(temporary, output)
  return { bytes: code.length, versionInlined }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(Path.resolve(process.argv[1])).href) {
  const started = performance.now()
  const { bytes, versionInlined } = await bundleProgram({
    input: ENTRY,
    output: OUTPUT,
    banner: `/*! prefork ${version}: the command, bundled by scripts/build-cli.mjs from src/cli/main.ts */`
  })
  if (!versionInlined) throw new Error(`the bundle does not contain ${Path.relative(ROOT, VERSION_MODULE)}`)
  // On stderr: stdout may be a machine's (`npm pack --json` runs this as `prepare`).
  process.stderr.write(
    `build-cli: ${Path.relative(ROOT, OUTPUT)} (${Math.round(bytes / 1024)} KiB) in ${Math.round(performance.now() - started)} ms\n`
  )
}
