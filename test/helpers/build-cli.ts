/**
 * Vitest's global setup: bundles the `prefork` command (scripts/build-cli.mjs)
 * before any test runs, so the tests that run `bin/prefork.js` run the bundle
 * users get, built from the sources under test. (A failed build fails the run,
 * with the bundler's message.)
 */
import { execFileSync } from "node:child_process"
import { fileURLToPath } from "node:url"

export default function setup(): void {
  execFileSync(process.execPath, [fileURLToPath(new URL("../../scripts/build-cli.mjs", import.meta.url))], {
    stdio: ["ignore", "ignore", "pipe"],
    timeout: 120_000
  })
}
