#!/usr/bin/env node
// The `prefork` command. It runs dist/bin/prefork.js: one file holding the CLI, the library and
// Effect, bundled by scripts/build-cli.mjs (on `npm install` in a checkout and before `npm pack`;
// the package ships no other copy of the command's modules),
// which any Node >= 22 runs with no TypeScript and which loads in a fraction of the time and
// memory of the separate modules. In a checkout of the repository whose sources are newer than
// that bundle, or that has none, it runs the TypeScript sources instead (Node >= 22.18 strips
// types outside node_modules); `npm run build:cli` brings the bundle up to date.
import { existsSync, readdirSync, statSync } from "node:fs"
import module from "node:module"
import { sep } from "node:path"
import { fileURLToPath } from "node:url"

const bundle = new URL("../dist/bin/prefork.js", import.meta.url)
const sources = new URL("../src/", import.meta.url)
const installed = fileURLToPath(import.meta.url)
  .split(sep)
  .includes("node_modules")
const checkout = !installed && existsSync(new URL("cli/main.ts", sources))

/** The newest modification time among the sources and package.json (the version). */
const newestSource = () => {
  let newest = statSync(new URL("../package.json", import.meta.url)).mtimeMs
  for (const entry of readdirSync(sources, { recursive: true })) {
    if (entry.endsWith(".ts")) newest = Math.max(newest, statSync(new URL(entry, sources)).mtimeMs)
  }
  return newest
}

// V8's compiled code for the bundle, cached on disk (in the system's temporary directory) from
// the first run on: later runs skip most of the parsing, and their RSS is ~4 MiB lower.
// NODE_DISABLE_COMPILE_CACHE=1 turns it off. Node >= 22.1.
module.enableCompileCache?.()

const bundled = existsSync(bundle) && (!checkout || statSync(bundle).mtimeMs >= newestSource())
if (bundled) {
  await import(bundle.href)
} else if (!checkout) {
  process.stderr.write(
    `prefork: ${fileURLToPath(bundle)} is missing: this copy of effect-prefork was not built ` +
      "(`npm run build` in it, or install a packed tarball: `npm pack`).\n"
  )
  process.exit(1)
} else {
  try {
    await import(new URL("cli/main.ts", sources).href)
  } catch (error) {
    if (error?.code !== "ERR_UNKNOWN_FILE_EXTENSION") throw error
    process.stderr.write(
      `prefork: this Node (${process.version}) cannot run the TypeScript sources of this checkout, and ` +
        `dist/bin/prefork.js is ${existsSync(bundle) ? "older than them" : "missing"}: run \`npm run build:cli\`.\n`
    )
    process.exit(1)
  }
}
