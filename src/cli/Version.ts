/**
 * The package version, read from `package.json` (two folders up, from
 * `src/cli` as from `dist/cli`). The bundled command
 * (`scripts/build-cli.mjs`) replaces this module with the version as a
 * constant, so the bundle reads no file and runs from anywhere.
 *
 * @since 0.1.0
 */
import { readFileSync } from "node:fs"

/**
 * @since 0.1.0
 * @category constants
 */
export const VERSION: string = (
  JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { readonly version: string }
).version
