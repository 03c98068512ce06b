/**
 * What `prefork`'s command line runs in: `effect/cli` with the services it
 * needs, `--help`, `--version` and `--log-level`, and usage errors told as a
 * shell tells them. `Command` runs the `prefork` command in it; the start-up
 * benchmark's floor (bench/fixtures/floor-cli.ts) runs a command with the same
 * flags and nothing else in it.
 *
 * @since 0.1.0
 */
import { NodePath, NodeStdio, NodeTerminal } from "@effect/platform-node"
import * as Effect from "effect/Effect"
import * as FileSystem from "effect/FileSystem"
import * as Layer from "effect/Layer"
import { CliConfig, CliOutput, Command, GlobalFlag } from "effect/cli"
import * as ChildProcessSpawner from "effect/process/ChildProcessSpawner"
import * as Argv from "./Argv.ts"
import * as Options from "./Options.ts"
import * as Version from "./Version.ts"

/**
 * A usage error as the shell shows it: what was wrong, then how to get help.
 *
 * @since 0.1.0
 * @category formatting
 */
export const usageText = (messages: ReadonlyArray<string>): string =>
  messages.map((m) => `prefork: ${m}\n`).join("") +
  "Usage: prefork [options] [--] <command> [args...]\nRun 'prefork --help' for every option and its default.\n"

// Usage errors: what was wrong and how to get help, on stderr; the full help only when asked for.
const presenter: CliOutput.Presenter = {
  present: (event) =>
    event._tag === "InvalidInvocation"
      ? Effect.sync(() => void process.stderr.write(usageText(event.errors.map((e) => e.message))))
      : CliOutput.defaultPresenter.present(event)
}

/**
 * What `effect/cli` requires of its environment. The command reads no file
 * and runs no subprocess through `effect/cli` (workers are started by the
 * supervisor's own spawner), so the file system and the process spawner are
 * placeholders that fail if ever used: Node's file system and crypto modules
 * stay unloaded, and the supervising process stays lighter.
 */
const services = Layer.mergeAll(
  NodePath.layer,
  NodeStdio.layer,
  NodeTerminal.layer,
  FileSystem.layerNoop({}),
  Layer.succeed(ChildProcessSpawner.ChildProcessSpawner)(
    ChildProcessSpawner.make(() => Effect.die(new Error("prefork: effect/cli's process spawner is not provided")))
  ),
  CliConfig.layer({ builtIns: [GlobalFlag.Help, GlobalFlag.Version, GlobalFlag.LogLevel] }),
  CliOutput.layerPresenter(presenter)
)

/**
 * Runs `command` (whose flags are `Options.flags`) with these arguments
 * (`process.argv.slice(2)`): the program's own arguments are split off first
 * (`Argv.splitCommand`), so they are never read as prefork's flags.
 *
 * @since 0.1.0
 * @category running
 */
export const runWith =
  <const Name extends string, I, C, E, R>(command: Command.Command<Name, I, C, E, R>) =>
  (argv: ReadonlyArray<string>) =>
    Command.runWith(command, { version: Version.VERSION })(
      Argv.splitCommand(argv, Options.VALUE_FLAGS, Options.BOOLEAN_FLAGS)
    ).pipe(Effect.provide(services))
