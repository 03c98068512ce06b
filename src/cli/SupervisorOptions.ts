/**
 * The parsed options (`Options.Input`) as the supervisor's options: which
 * mode runs the command (plain, module, cluster), the command's restart
 * policy, and what the parser cannot see refused as a usage error (`--ready
 * message` for a program that is not Node, a `--cwd` that is not a directory).
 *
 * @since 0.1.0
 */
import { statSync } from "node:fs"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { InvalidOptions } from "../Errors.ts"
import * as Preload from "../node/internal/preload.ts"
import * as Supervisor from "../Supervisor.ts"
import * as Options from "./Options.ts"

const isNode = Preload.isNode

/**
 * A usage error (exit 2) about `field`.
 *
 * @since 0.1.0
 * @category errors
 */
export const usage = (field: string, message: string): InvalidOptions => new InvalidOptions({ field, message })

/**
 * Turns the parsed command line into supervisor options, refusing what the
 * parser cannot see: `--ready message` for a program that is not Node, a
 * `--cwd` that is not a directory. Without `--max-restarts` or `--intensity`
 * the budget is `Options.DEFAULT_INTENSITY`; without `--backoff` the backoff is
 * `Options.DEFAULT_BACKOFF`.
 *
 * `--ready message` needs an IPC channel: `node <args…>` then runs under
 * prefork's own Node binary (`process.execPath`) in module mode, with the
 * arguments unchanged.
 *
 * @since 0.1.0
 * @category options
 */
export const toOptions = (
  input: Options.Input,
  onOutput: Supervisor.Options["onOutput"]
): Effect.Effect<Supervisor.Options, InvalidOptions> =>
  Effect.gen(function* () {
    const [command, ...args] = input.command as readonly [string, ...Array<string>]
    if (Option.isSome(input.lifetimeJitter) && Option.isNone(input.maxLifetime)) {
      return yield* usage("lifetimeJitter", "--lifetime-jitter needs --max-lifetime <duration>")
    }
    const spares = Option.isSome(input.spares) && input.spares.value > 0
    if (spares && (!isNode(command) || args.length === 0)) {
      return yield* usage(
        "spares",
        "--spares keeps Node workers booted until they get a task id over IPC: prefork --spares 1 -- node app.js (a worker that awaits Worker.activated() or Worker.taskId before it listens)"
      )
    }
    if (Option.isSome(input.cwd) && !isDirectory(input.cwd.value)) {
      return yield* usage("cwd", `--cwd: ${input.cwd.value} is not a directory`)
    }
    let run: Pick<Supervisor.Options, "mode" | "command" | "args" | "execArgv" | "ready"> = { command, args }
    if (input.cluster) {
      if (!isNode(command) || args.length === 0) {
        return yield* usage(
          "cluster",
          "--cluster runs a Node script as node:cluster workers: prefork --cluster -- node app.js"
        )
      }
      if (input.listen.length > 0) {
        return yield* usage(
          "listen",
          "--listen and --cluster do not mix: node:cluster workers share the ports they listen on themselves; without --cluster, workers serve fd 3"
        )
      }
      // Ready when a worker listens (or calls Worker.ready), unless --ready says otherwise.
      run = {
        mode: "cluster",
        command: args[0]!,
        args: args.slice(1),
        execArgv: [],
        ...(input.ready === "spawn" ? { ready: "listening" as const } : {})
      }
    } else if (input.ready === "message") {
      if (!isNode(command) || args.length === 0) {
        return yield* usage(
          "ready",
          "--ready message needs a Node program that calls Worker.ready: prefork --ready message -- node script.js"
        )
      }
      run = { mode: "module", command: args[0]!, args: args.slice(1), execArgv: [] }
    } else if (
      isNode(command) &&
      args.length > 0 &&
      (Option.isSome(input.heartbeat) ||
        spares ||
        (input.listen.length > 0 && input.drain && !args[0]!.startsWith("-")))
    ) {
      // A Node program beats from its own event loop, a spare waits for its task id, and a server on the owned
      // sockets says it listens (ready unless --ready says otherwise), over IPC: module mode.
      run = {
        mode: "module",
        command: args[0]!,
        args: args.slice(1),
        execArgv: [],
        ...(input.listen.length > 0 && input.drain && input.ready === "spawn" ? { ready: "listening" as const } : {})
      }
    }
    const option = <A, K extends string>(key: K, value: Option.Option<A>) =>
      Option.isSome(value) ? ({ [key]: value.value } as { readonly [P in K]: A }) : {}
    return {
      processes: input.processes,
      restart: input.restart,
      ...option("normalExitCodes", input.normalExitCodes),
      // A service's policy unless the command line gives a budget (DEFAULT_INTENSITY, DEFAULT_BACKOFF).
      ...option("maxRestarts", input.maxRestarts),
      ...(Option.isNone(input.maxRestarts) && Option.isNone(input.intensity)
        ? { intensity: Options.DEFAULT_INTENSITY }
        : option("intensity", input.intensity)),
      backoff: {
        initial: Option.getOrElse(input.backoff, () => Options.DEFAULT_BACKOFF.initial),
        ...(Option.isNone(input.backoff) ? { max: Options.DEFAULT_BACKOFF.max } : {}),
        ...option("max", input.backoffMax),
        ...option("factor", input.backoffFactor)
      },
      ...option("resetAfter", input.resetAfter),
      ...option("stopTimeout", input.stopTimeout),
      ready: input.ready,
      ...(input.listen.length > 0 ? { listen: input.listen } : {}),
      ...option("readyTimeout", input.readyTimeout),
      ...option("heartbeat", input.heartbeat),
      ...option("maxMemory", input.maxMemory),
      ...option("maxLifetime", input.maxLifetime),
      ...option("lifetimeJitter", input.lifetimeJitter),
      ...option("spares", input.spares),
      env: Object.fromEntries(input.env),
      ...option("cwd", input.cwd),
      ...option("user", input.user),
      ...option("group", input.group),
      ...(input.prefix ? { stdio: "pipe" as const, onOutput } : { stdio: "inherit" as const }),
      ...(input.drain ? {} : { drain: false }),
      ...run
    } satisfies Supervisor.Options
  })

const isDirectory = (path: string): boolean => {
  try {
    return statSync(path).isDirectory()
  } catch {
    return false
  }
}
