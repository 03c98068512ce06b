/**
 * How a worker process ended, as data: it either exited with a code or was
 * killed by a signal. This is the pair `(code, signal)` Node reports on a
 * child's `'exit'` event, and what Tornado reads with `WIFSIGNALED` /
 * `WEXITSTATUS`. It is never a message string: match on `_tag`.
 *
 * @since 0.1.0
 */
import { constants } from "node:os"
import * as Data from "effect/Data"

/**
 * The process called `exit(code)` (or returned from `main`).
 *
 * @since 0.1.0
 * @category models
 */
export class Exited extends Data.TaggedClass("Exited")<{
  readonly code: number
}> {}

/**
 * The process was killed by a signal, such as `"SIGKILL"` or `"SIGABRT"`.
 *
 * @since 0.1.0
 * @category models
 */
export class Signaled extends Data.TaggedClass("Signaled")<{
  readonly signal: string
}> {}

/**
 * @since 0.1.0
 * @category models
 */
export type ExitStatus = Exited | Signaled

/**
 * @since 0.1.0
 * @category constructors
 */
export const exited = (code: number): ExitStatus => new Exited({ code })

/**
 * @since 0.1.0
 * @category constructors
 */
export const signaled = (signal: string): ExitStatus => new Signaled({ signal })

/**
 * Builds an `ExitStatus` from the `(code, signal)` pair of Node's `'exit'`
 * event. Exactly one of them is non-null; if both were null (it does not
 * happen on POSIX) the status is `Exited{1}`, so it still counts as abnormal.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromNode = (code: number | null, signal: string | null): ExitStatus =>
  signal !== null ? signaled(signal) : exited(code ?? 1)

/**
 * The platform's number for a signal name (`"SIGKILL"` → 9 on Linux), or
 * `undefined` for a name the platform does not know.
 *
 * @since 0.1.0
 * @category utils
 */
export const signalNumber = (signal: string): number | undefined =>
  (constants.signals as Record<string, number | undefined>)[signal]

/**
 * Tornado's wording for an exit: `"killed by signal 9"`, `"exited with status
 * 42"` or `"exited normally"` (for code 0).
 *
 * @example
 * ```ts
 * import { ExitStatus } from "effect-prefork"
 *
 * ExitStatus.describe(ExitStatus.exited(42)) // "exited with status 42"
 * ```
 *
 * @since 0.1.0
 * @category utils
 */
export const describe = (status: ExitStatus): string => {
  if (status._tag === "Signaled") {
    const n = signalNumber(status.signal)
    return n === undefined ? `killed by signal ${status.signal}` : `killed by signal ${n}`
  }
  return status.code === 0 ? "exited normally" : `exited with status ${status.code}`
}

/**
 * The conventional shell exit code for a status: the code itself, or
 * `128 + n` for a signal.
 *
 * @since 0.1.0
 * @category utils
 */
export const toShellCode = (status: ExitStatus): number =>
  status._tag === "Exited" ? status.code : 128 + (signalNumber(status.signal) ?? 0)
