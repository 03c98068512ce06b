/**
 * Builds the package (`npm run build`: the library's dist/ and the bundled
 * command) after `npm install` in a checkout, and when npm installs the
 * package from a git URL (npm then installs the devDependencies in its clone,
 * runs this, and packs the result).
 *
 *   "postprepare": "node scripts/prepare.mjs"   # in package.json
 *
 * Not `prepare`: npm 11 lists a dependency's `prepare` among the install
 * scripts to approve whenever it comes from a tarball, a path or git, even
 * though it never runs it there, so a package with one warns on every install
 * of a packed tarball. `postprepare` runs in the same places (the root of an
 * `npm install`) and is never a dependency's script.
 *
 * Without the tools (devDependencies absent: `npm install --omit=dev`) it
 * says so and builds nothing, rather than failing the install.
 */
import { spawnSync } from "node:child_process"
import { createRequire } from "node:module"

const require = createRequire(import.meta.url)
const missing = ["typescript", "rolldown"].filter((name) => {
  try {
    require.resolve(`${name}/package.json`)
    return false
  } catch {
    return true
  }
})
if (missing.length > 0) {
  process.stderr.write(
    `effect-prefork: not built (${missing.join(", ")} not installed): run \`npm install\` here, ` +
      "or install a packed tarball (`npm pack`)\n"
  )
} else {
  const r = spawnSync("npm", ["run", "build"], { stdio: "inherit" })
  process.exitCode = r.status ?? 1
}
