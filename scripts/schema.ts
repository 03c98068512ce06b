/**
 * Writes schema/prefork.schema.json, the JSON Schema of prefork's config file,
 * from the options' one definition (src/cli/Options.ts). Run after adding or
 * changing an option; test/cli/config.test.ts fails while the committed file
 * differs from what this writes. The file is then formatted as the rest of
 * the tree (oxfmt), so that `npm run fmt:check` passes.
 *
 *   npm run schema
 */
import { spawnSync } from "node:child_process"
import { writeFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { schema } from "../src/cli/Options.ts"

const output = fileURLToPath(new URL("../schema/prefork.schema.json", import.meta.url))
writeFileSync(output, `${JSON.stringify(schema(), null, 2)}\n`)
const oxfmt = fileURLToPath(new URL("../node_modules/.bin/oxfmt", import.meta.url))
const formatted = spawnSync(oxfmt, [output], { stdio: "ignore" })
if (formatted.status !== 0) throw new Error(`oxfmt ${output} failed (${formatted.status ?? formatted.signal})`)
process.stdout.write(`wrote ${output}\n`)
