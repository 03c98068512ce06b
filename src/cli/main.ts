/**
 * The `prefork` executable: `NodeRuntime.runMain` over the command, with the
 * exit codes of `ExitCode`. Errors are reported by the command itself (through
 * the logger, or as usage messages), so the runtime's own report is off.
 *
 * @since 0.1.0
 */
import { NodeRuntime } from "@effect/platform-node"
import { run } from "./Command.ts"
import { teardown } from "./ExitCode.ts"

NodeRuntime.runMain(run(process.argv.slice(2)), { disableErrorReporting: true, teardown })
