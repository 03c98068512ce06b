/**
 * A `prefork` started by npm stops when npm goes away. `npm start` and `npx
 * prefork` run prefork as npm → `sh -c` → node: a SIGTERM to npm's pid (what a
 * user, a process manager or a container runtime signals) makes npm forward it
 * to the shell, which dies of it without passing it on (dash does not `exec`
 * the script's command), and npm exits; prefork and every worker are left
 * running, adopted by init. So when the environment says npm started prefork
 * (`npm_lifecycle_event`, `npm_command` or `npm_execpath`) and prefork's parent
 * changes, prefork stops as on SIGTERM, with one log line saying why.
 *
 * A prefork started directly is never stopped this way: a daemon started with
 * `setsid prefork … &` keeps running when its shell exits.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"

/**
 * How often the parent is looked at: a stop within a second of npm's is
 * soon enough, and one `getppid` a second costs nothing.
 *
 * @since 0.1.0
 * @category constants
 */
export const INTERVAL_MILLIS = 1_000

/**
 * Whether npm (or npx, `npm exec`, yarn and pnpm, which set the same names) started this process.
 *
 * @since 0.1.0
 * @category utils
 */
export const startedByNpm = (env: Readonly<Record<string, string | undefined>>): boolean =>
  ["npm_lifecycle_event", "npm_command", "npm_execpath"].some((name) => (env[name] ?? "") !== "")

/**
 * For the life of the scope, when npm started prefork: once prefork's parent
 * is no longer the one it started with, logs why and sends prefork SIGTERM,
 * so that it stops as {@link Signals} says (gracefully, once). The timer is
 * unref'd: it never keeps prefork alive.
 *
 * @since 0.1.0
 * @category constructors
 */
export const watch = (env: Readonly<Record<string, string | undefined>>): Effect.Effect<void, never, Scope.Scope> =>
  Effect.gen(function* () {
    if (!startedByNpm(env)) return
    const parent = process.ppid
    const context = yield* Effect.context<never>()
    yield* Effect.acquireRelease(
      Effect.sync(() => {
        const timer = setInterval(() => {
          if (process.ppid === parent) return
          clearInterval(timer)
          Effect.runForkWith(context)(
            Effect.logWarning(
              `npm (pid ${parent}), which started prefork, went away without passing on its signal: stopping as on SIGTERM`
            ).pipe(Effect.andThen(Effect.sync(() => process.kill(process.pid, "SIGTERM"))))
          )
        }, INTERVAL_MILLIS)
        timer.unref()
        return timer
      }),
      (timer) => Effect.sync(() => clearInterval(timer))
    )
  })
