/**
 * The Node.js versions `prefork` runs on: package.json's `"engines"` says
 * `node >= 22`, which npm only warns about at install time. The command
 * checks the Node running it before anything else and refuses an older one
 * with a usage error (exit 2), rather than failing later in a way that does
 * not say why.
 *
 * @since 0.1.0
 */

/**
 * The oldest major version of Node.js supported (package.json `"engines"`).
 *
 * @since 0.1.0
 * @category constants
 */
export const MINIMUM_NODE_MAJOR = 22

/**
 * Why `version` (as `process.version`: `v20.20.2`) cannot run prefork, or
 * `undefined` when it can. `execPath` names the binary in the message.
 *
 * @since 0.1.0
 * @category checks
 */
export const refuseNode = (version: string, execPath: string): string | undefined => {
  const major = Number(/^v?(\d+)\./.exec(version)?.[1])
  if (!Number.isInteger(major) || major >= MINIMUM_NODE_MAJOR) return undefined
  return (
    `prefork: Node.js >= ${MINIMUM_NODE_MAJOR} is required (package.json "engines"), ` +
    `but ${execPath} is ${version}: run prefork with a newer node on the PATH.\n`
  )
}
