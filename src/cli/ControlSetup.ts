/**
 * How the `prefork` command sets up its control socket from `--control` and
 * `--name`: an explicit path wins; else the socket is the name's, the
 * explicit `--name` or the default one (`Names.defaultName`), which moves on
 * to `name-2`, … while a live prefork of this user holds it, and says so.
 *
 * A path or name given on the command line that cannot be used is a usage
 * error (exit 2, naming the pid that holds a name); the default one that
 * cannot be used is a warning, and prefork runs without control.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import { InvalidOptions } from "../Errors.ts"
import type { SupervisorHandle } from "../Supervisor.ts"
import * as Control from "./Control.ts"
import * as Names from "./Names.ts"

/**
 * What the command line says about control.
 *
 * @since 0.1.0
 * @category models
 */
export interface Input {
  /** `--control`: a path, or `off`. */
  readonly control: Option.Option<string>
  /** `--name`. */
  readonly name: Option.Option<string>
  /** The workers' command and its arguments (the default name comes from it). */
  readonly command: ReadonlyArray<string>
}

/**
 * `prefork ctl stop`: exactly what SIGTERM does (the same log lines, the same
 * graceful stop, exit 0), by sending prefork SIGTERM once the answer is out.
 */
const stop: Effect.Effect<void> = Effect.logInfo("prefork ctl stop received: stopping as on SIGTERM").pipe(
  Effect.andThen(Effect.sync(() => void setImmediate(() => process.kill(process.pid, "SIGTERM"))))
)

/**
 * Binds the control socket as `input` says, for the life of the scope, before
 * the supervisor starts (a name taken by a running prefork stops prefork
 * before any worker starts); returns what gives it the supervisor once there
 * is one.
 *
 * @since 0.1.0
 * @category constructors
 */
export const setup = (
  input: Input
): Effect.Effect<(handle: SupervisorHandle) => Effect.Effect<void>, InvalidOptions, Scope.Scope> =>
  Effect.gen(function* () {
    const none = (_: SupervisorHandle) => Effect.void
    if (Option.isSome(input.control) && input.control.value === "off") return none
    if (Option.isSome(input.name)) {
      const wrong = Names.invalid(input.name.value)
      if (wrong !== undefined) return yield* new InvalidOptions({ field: "name", message: `--name: ${wrong}` })
    }
    const where: Control.Where = Option.isSome(input.control)
      ? { path: input.control.value }
      : Option.isSome(input.name)
        ? { name: input.name.value, explicit: true }
        : { name: Names.defaultName(input.command), explicit: false }
    const listening = yield* Control.listen(where, { command: input.command, stop }).pipe(
      Effect.map(Option.some),
      Effect.catch((why) =>
        // The default name unusable (not trusted, every candidate taken) is no reason not to run; a chosen one is.
        Option.isSome(input.control)
          ? Effect.fail(new InvalidOptions({ field: "control", message: `--control: ${why.message}` }))
          : Option.isSome(input.name)
            ? Effect.fail(new InvalidOptions({ field: "name", message: `--name: ${why.message}` }))
            : Effect.as(
                Effect.logWarning(`No control socket: ${why.message}; choose one with --control <path>`),
                Option.none<Control.Listening>()
              )
      )
    )
    if (Option.isNone(listening)) return none
    const { name, path, passed } = listening.value
    if (name !== undefined && passed.length > 0) {
      const by = passed.map((p) => `${p.name} (prefork pid ${p.pid ?? "?"})`).join(", ")
      const many = passed.length > 1
      yield* Effect.logInfo(
        `The name${many ? "s" : ""} ${by} ${many ? "are" : "is"} taken: this prefork is ${name} (prefork ctl -n ${name} status)`
      )
    } else {
      yield* Effect.logDebug(
        `Control socket: ${path} (prefork ctl${name === undefined ? ` --control ${path}` : ` -n ${name}`} status | restart <task> | reload | scale <n> | stop)`
      )
    }
    return listening.value.serve
  })
