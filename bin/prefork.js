#!/usr/bin/env node
// The `prefork` command. Installed from npm it runs the build (dist/); in a checkout of the
// repository it runs the TypeScript source directly, as Node refuses to strip types under
// node_modules but does it anywhere else (Node >= 22.18).
import { existsSync } from "node:fs"
import { sep } from "node:path"
import { fileURLToPath } from "node:url"

const source = new URL("../src/cli/main.ts", import.meta.url)
const installed = fileURLToPath(import.meta.url)
  .split(sep)
  .includes("node_modules")
await import(!installed && existsSync(source) ? source.href : new URL("../dist/cli/main.js", import.meta.url).href)
