/**
 * The `prefork` executable: `NodeRuntime.runMain` over the command, with the
 * exit codes of `ExitCode`. Errors are reported by the command itself (through
 * the logger, or as usage messages), so the runtime's own report is off. A
 * Node older than package.json's `"engines"` is refused first (exit 2).
 *
 * @since 0.1.0
 */
import { NodeRuntime } from "@effect/platform-node"
import { run } from "./Command.ts"
import * as Ctl from "./Ctl.ts"
import { refuseNode } from "./Engines.ts"
import { teardown, USAGE } from "./ExitCode.ts"

const argv = process.argv.slice(2)
const refused = refuseNode(process.version, process.execPath)
if (refused !== undefined) {
  process.stderr.write(refused)
  process.exitCode = USAGE
} else if (argv[0] === "ctl") {
  // `prefork ctl …` drives a running prefork; anything else is a prefork to run (`prefork -- ctl` runs a program "ctl").
  void Ctl.main(argv.slice(1)).then((code) => {
    process.exitCode = code
  })
} else {
  NodeRuntime.runMain(run(argv), { disableErrorReporting: true, teardown })
}
