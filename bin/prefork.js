#!/usr/bin/env node
// The `prefork` command. It runs dist/bin/prefork.js: one file holding the CLI, the library and
// Effect, bundled by scripts/build-cli.mjs (on `npm install` in a checkout and before `npm pack`;
// the package ships no other copy of the command's modules),
// which any Node >= 22 runs with no TypeScript and which loads in a fraction of the time and
// memory of the separate modules. In a checkout of the repository whose sources are newer than
// that bundle, or that has none, it runs the TypeScript sources instead (Node >= 22.18 strips
// types outside node_modules); `npm run build:cli` brings the bundle up to date.
import { existsSync, lstatSync, mkdirSync, readdirSync, statSync } from "node:fs"
import module from "node:module"
import { tmpdir } from "node:os"
import { dirname, join, sep } from "node:path"
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

/**
 * Where V8's compiled code for the bundle is cached: `<tmpdir>/prefork-compile-cache-<uid>`, made
 * by this user with mode 0700, and used only while it is a directory (not a link) that this user
 * owns and nobody else can write, in a directory where nobody else can replace it (not writable by
 * others, or sticky like /tmp). Code read from a cache runs as prefork's user, root included: a
 * directory someone else can write would let them run theirs. Anything else (Node's shared default
 * `<tmpdir>/node-compile-cache` is whoever made it first's): no cache, and prefork starts a little
 * slower. With NODE_COMPILE_CACHE set, Node uses that directory itself.
 */
const compileCacheDir = () => {
  const uid = process.getuid?.()
  if (uid === undefined || process.env.NODE_COMPILE_CACHE || process.env.NODE_DISABLE_COMPILE_CACHE) return undefined
  const dir = join(tmpdir(), `prefork-compile-cache-${uid}`)
  try {
    mkdirSync(dir, { mode: 0o700 })
  } catch (error) {
    if (error?.code !== "EEXIST") return undefined
  }
  try {
    const own = lstatSync(dir)
    const parent = lstatSync(dirname(dir))
    const othersWrite = (stats) => (stats.mode & 0o022) !== 0
    const safe = own.isDirectory() && own.uid === uid && !othersWrite(own)
    return safe && (!othersWrite(parent) || (parent.mode & 0o1000) !== 0) ? dir : undefined
  } catch {
    return undefined
  }
}

// From the second run on, most of the bundle's parsing is skipped (Node >= 22.1).
// NODE_DISABLE_COMPILE_CACHE=1 turns it off.
const cacheDir = compileCacheDir()
if (cacheDir !== undefined) module.enableCompileCache?.(cacheDir)

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
