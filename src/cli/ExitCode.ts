/**
 * How `prefork` ends: one exit code per outcome, so scripts and process
 * managers above it can tell them apart.
 *
 * | code | when |
 * | ---- | ---- |
 * | 0    | every worker exited normally, or prefork was asked to stop (SIGTERM, SIGINT) |
 * | 1    | with `--restart never`, a worker's last exit was abnormal; or an unexpected error |
 * | 2    | bad usage: an unknown option, a bad value, a missing command |
 * | 3    | the restart budget is spent (`TooManyRestarts`): every worker was stopped first |
 * | 126  | the command could not be started for another reason (`EACCES`, `EAGAIN`, …) |
 * | 127  | the command was not found, or is not an executable file |
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Exit from "effect/Exit"
import * as Schema from "effect/Schema"
import { CliError } from "effect/cli"
import type * as Runtime from "effect/Runtime"

/**
 * @since 0.1.0
 * @category constants
 */
export const OK = 0

/**
 * @since 0.1.0
 * @category constants
 */
export const FAILURE = 1

/**
 * @since 0.1.0
 * @category constants
 */
export const USAGE = 2

/**
 * @since 0.1.0
 * @category constants
 */
export const TOO_MANY_RESTARTS = 3

/**
 * An address of `--listen` could not be bound (in use, not permitted, not on
 * this machine): nothing was started.
 *
 * @since 0.1.0
 * @category constants
 */
export const CANNOT_LISTEN = 4

/**
 * @since 0.1.0
 * @category constants
 */
export const CANNOT_EXECUTE = 126

/**
 * @since 0.1.0
 * @category constants
 */
export const NOT_FOUND = 127

/**
 * Ends `prefork` with a code, after its cause has been reported.
 *
 * @since 0.1.0
 * @category errors
 */
export class ExitWith extends Schema.TaggedError<ExitWith>()("ExitWith", {
  code: Schema.Int
}) {}

const tagOf = (u: unknown): string | undefined =>
  typeof u === "object" && u !== null && "_tag" in u && typeof u._tag === "string" ? u._tag : undefined

/**
 * The exit code for how the program ended.
 *
 * @since 0.1.0
 * @category utils
 */
export const fromExit = <A, E>(exit: Exit.Exit<A, E>): number => {
  if (Exit.isSuccess(exit) || Cause.hasInterruptsOnly(exit.cause)) return OK
  const error = Cause.squash(exit.cause)
  if (error instanceof ExitWith) return error.code
  if (CliError.isCliError(error)) return error._tag === "ShowHelp" && error.errors.length === 0 ? OK : USAGE
  switch (tagOf(error)) {
    case "InvalidOptions":
      return USAGE
    case "TooManyRestarts":
      return TOO_MANY_RESTARTS
    case "BindFailed":
      return CANNOT_LISTEN
    case "SpawnFailed": {
      const code = (error as { readonly code?: string | undefined }).code
      return code === "ENOENT" ? NOT_FOUND : CANNOT_EXECUTE
    }
  }
  return FAILURE
}

/** How long prefork waits at exit for a reader that does not read what is left of its output. */
const FLUSH_TIMEOUT_MS = 10_000

/**
 * Waits until what was written to the streams has been handed to the system,
 * so the last lines of a crashing worker are not lost when prefork exits; but
 * no longer than `FLUSH_TIMEOUT_MS`: a reader that stopped reading
 * (`prefork … | stalled`) does not keep prefork from exiting.
 */
const flush = (streams: ReadonlyArray<NodeJS.WritableStream>, done: () => void): void => {
  let pending = streams.length
  const deadline = setTimeout(() => {
    pending = 0
    done()
  }, FLUSH_TIMEOUT_MS)
  const one = () => {
    if (--pending !== 0) return
    clearTimeout(deadline)
    done()
  }
  for (const stream of streams) {
    try {
      stream.write("", one)
    } catch {
      one()
    }
  }
}

/**
 * The teardown for `NodeRuntime.runMain`: flush stdout and stderr, then exit
 * with {@link fromExit}.
 *
 * @since 0.1.0
 * @category running
 */
export const teardown: Runtime.Teardown = (exit, onExit) => {
  const code = fromExit(exit)
  flush([process.stdout, process.stderr], () => {
    onExit(code)
    // Nothing of prefork's is left to wait for: do not let a stray handle keep it alive.
    process.exit(code)
  })
}
