/**
 * The `prefork` command, written with `effect/cli`: run `n` copies of any
 * program, restart the ones that fail with the same task id, prefix their
 * output, and answer signals the way gunicorn's arbiter does.
 *
 * ```sh
 * prefork -n 4 -- node server.js --port 8080
 * prefork --max-restarts 10 --backoff 100ms -- python worker.py
 * ```
 *
 * Everything from the command on is the command's, verbatim: `--` is needed
 * only when the command itself starts with `-`. The exit codes are in
 * `ExitCode`, the signals in `Signals`.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { Command } from "effect/cli"
import type { ExitRecord } from "../Errors.ts"
import * as ExitStatus from "../ExitStatus.ts"
import * as NodeProcessSpawner from "../node/NodeProcessSpawner.ts"
import * as Supervisor from "../Supervisor.ts"
import * as Argv from "./Argv.ts"
import * as CliRuntime from "./CliRuntime.ts"
import * as ExitCode from "./ExitCode.ts"
import * as Logging from "./Logging.ts"
import * as Metrics from "../Metrics.ts"
import * as MetricsServer from "./MetricsServer.ts"
import * as Health from "../node/Health.ts"
import * as Orphan from "./Orphan.ts"
import * as ConfigFile from "./ConfigFile.ts"
import * as Options from "./Options.ts"
import * as Output from "./Output.ts"
import * as PidFile from "./PidFile.ts"
import { toOptions, usage } from "./SupervisorOptions.ts"
import * as Reload from "./Reload.ts"
import * as ControlSetup from "./ControlSetup.ts"
import * as Signals from "./Signals.ts"
import * as Watch from "./Watch.ts"
import * as Status from "./Status.ts"
import * as Version from "./Version.ts"

/**
 * The package version (see `Version`).
 *
 * @since 0.1.0
 * @category constants
 */
export const VERSION: string = Version.VERSION

/**
 * The options, defined in `Options` (flags, config file and schema from one
 * definition), re-exported for the command's users.
 *
 * @since 0.1.0
 * @category options
 */
export { BOOLEAN_FLAGS, DEFAULT_BACKOFF, DEFAULT_INTENSITY, flags, VALUE_FLAGS } from "./Options.ts"

/**
 * @since 0.1.0
 * @category options
 */
export type { Input } from "./Options.ts"

/**
 * The parsed options as the supervisor's (see `SupervisorOptions`).
 *
 * @since 0.1.0
 * @category options
 */
export { toOptions } from "./SupervisorOptions.ts"

const stderr = process.stderr

/** The workers whose last exit was not normal (what `--restart never` reports). */
const abnormal = (exits: ReadonlyArray<ExitRecord>, normal: ReadonlyArray<number>): ReadonlyArray<ExitRecord> => {
  const last = new Map<number, ExitRecord>()
  for (const exit of exits) last.set(exit.taskId, exit)
  return [...last.values()].filter((e) => e.status._tag !== "Exited" || !normal.includes(e.status.code))
}

/**
 * Supervises as the command line says, until every worker has exited or a
 * signal stops prefork. Fails with the error that decides the exit code.
 *
 * @since 0.1.0
 * @category running
 */
export const supervise = (input: Options.Input, configFile?: string) => {
  const color = Output.useColor(stderr, process.env)
  const onOutput = Output.make({ stdout: process.stdout, stderr, env: process.env, format: input.logFormat })
  const report = (handle: Supervisor.SupervisorHandle) =>
    Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis
      const slots = yield* handle.status
      const spares = yield* handle.spares
      const stopping = Status.unlisted(slots, spares, yield* handle.live)
        .map(Status.processName)
        .join(", ")
      if (input.logFormat === "pretty") {
        stderr.write(
          `${Status.table(slots, now)}\n${spares.length > 0 ? `spares: ${spares.join(", ")}\n` : ""}${stopping.length > 0 ? `stopping: ${stopping}\n` : ""}`
        )
        return
      }
      // The same key names as every other record: taskId and pid.
      for (const { task, ...row } of Status.rows(slots, now)) {
        yield* Effect.logInfo("status").pipe(Effect.annotateLogs({ taskId: task, ...row }))
      }
      if (spares.length > 0) yield* Effect.logInfo("status").pipe(Effect.annotateLogs({ spares: spares.join(",") }))
      if (stopping.length > 0) yield* Effect.logInfo("status").pipe(Effect.annotateLogs({ stopping }))
    })
  return Effect.scoped(
    Effect.gen(function* () {
      const options = yield* toOptions(input, onOutput)
      // The process to signal, said first: through npx or npm, several processes match "prefork".
      yield* Effect.logInfo(`prefork pid ${process.pid} (signal this one: HUP reload, TERM stop, USR2 status)`)
      if (configFile !== undefined) yield* Effect.logInfo(`Config file: ${configFile}`)
      if (Option.isSome(input.pidFile)) yield* PidFile.hold(input.pidFile.value)
      const shutdownDelay = Option.filter(input.shutdownDelay, (d) => !Duration.isZero(d))
      const listener = yield* Signals.listen({ shutdownDelay: Option.isSome(shutdownDelay) })
      // Started by npm or npx: npm's SIGTERM does not reach prefork through `sh -c`, so npm's going away stops it.
      yield* Orphan.watch(process.env)
      if (Option.isSome(input.metrics)) {
        // Serving before any worker starts: the first scrape sees them start.
        yield* Metrics.register
        const url = yield* MetricsServer.serve(input.metrics.value, Argv.formatHostPort(input.metrics.value))
        yield* Effect.logInfo(`Metrics on ${url}`)
      }
      // Serving before any worker starts and until the last one is reaped: "starting", then "stopping" on /readyz.
      const health = Option.isSome(input.health)
        ? yield* Health.serve(listener.supervisor, input.health.value, {
            given: Argv.formatHostPort(input.health.value),
            draining: listener.stopping
          })
        : undefined
      if (health !== undefined) yield* Effect.logInfo(`Health on ${health.url} (/livez, /readyz, /startupz)`)
      // The control socket (--control, --name) before any worker starts: a name taken is said before anything runs.
      const control = yield* ControlSetup.setup({ control: input.control, name: input.name, command: input.command })
      const handle = yield* Supervisor.start(options)
      yield* Effect.forkScoped(Signals.control(handle, listener, report(handle)))
      yield* control(handle)
      if (input.watch.length > 0) {
        yield* Watch.watch({
          paths: input.watch,
          ignore: input.watchIgnore,
          debounce: Option.getOrElse(input.watchDebounce, () => Duration.millis(300)),
          // Logged as it starts and ends (Reload.ts), as a SIGHUP's reload is.
          onChange: (files) =>
            Effect.ignore(
              Reload.reload(
                handle,
                `${files.slice(0, 3).join(", ")}${files.length > 3 ? ` and ${files.length - 3} more` : ""} changed`
              )
            )
        }).pipe(Effect.catch((error) => Effect.fail(usage("watch", error.message))))
        yield* Effect.logInfo(`Watching ${input.watch.join(", ")} for changes (a change reloads every worker)`)
      }
      // Added last, so run first when a signal interrupts: the workers serve on while /readyz says 503.
      if (Option.isSome(shutdownDelay)) yield* Health.delayStop(shutdownDelay.value, { health, cut: listener.cut })
      const summary = yield* handle.await
      // Only the slots that remain: a slot scaled away is not a worker that ended abnormally.
      const failed = abnormal(
        summary.exits.filter((e) => e.taskId < handle.processes),
        options.normalExitCodes ?? [0]
      )
      if (failed.length > 0) {
        const which = failed.map((e) => `child ${e.taskId} (pid ${e.pid}) ${ExitStatus.describe(e.status)}`)
        yield* Effect.logError(`${failed.length} of ${handle.processes} workers ended abnormally: ${which.join(", ")}`)
        return yield* new ExitCode.ExitWith({ code: ExitCode.FAILURE })
      }
      yield* Effect.logInfo(`Every worker exited normally (${summary.restarts} restarts)`)
    })
  ).pipe(
    // Usage mistakes are told as such; what happened to the workers goes through the logger.
    Effect.tapError((error) =>
      error._tag === "InvalidOptions"
        ? Effect.sync(() => void stderr.write(CliRuntime.usageText([error.message])))
        : error._tag === "ExitWith"
          ? Effect.void
          : Effect.logError(error.message)
    ),
    Effect.tapDefect((defect) => Effect.logError("prefork failed unexpectedly", defect)),
    Effect.provide(Layer.merge(NodeProcessSpawner.layer, Logging.layer(input.logFormat, stderr, color)))
  )
}

/**
 * Reads the config file (`ConfigFile`), lets the command line override it,
 * and supervises. A bad config file is a usage error (exit 2), as is a
 * command given neither on the command line nor in the file.
 *
 * @since 0.1.0
 * @category running
 */
export const start = (given: Options.Given) =>
  ConfigFile.load(given.config, process.cwd()).pipe(
    Effect.flatMap((loaded) => {
      const input = Options.resolve(given, Option.getOrUndefined(Option.map(loaded, (l) => l.values)))
      return input.command.length === 0
        ? Effect.fail(usage("command", "Missing required argument: command"))
        : Effect.succeed({ input, file: Option.getOrUndefined(Option.map(loaded, (l) => l.path)) })
    }),
    Effect.tapError((error) => Effect.sync(() => void stderr.write(CliRuntime.usageText([error.message])))),
    Effect.flatMap(({ input, file }) => supervise(input, file))
  )

/**
 * @since 0.1.0
 * @category commands
 */
export const command = Command.make("prefork", Options.flags, start).pipe(
  Command.withDescription(
    [
      "Run n copies of a program, restart the ones that fail with the same task id",
      "(in PREFORK_TASK_ID), and give up cleanly when they fail too often.",
      "",
      "Signals:    TERM, INT   stop every worker (SIGTERM, then SIGKILL after --stop-timeout)",
      "            HUP         rolling reload: each new worker starts beside the old one, which stops once it is --ready",
      "            TTIN, TTOU  one worker more, one fewer",
      "            USR2        print the status table to stderr",
      "Exit codes: 0 every worker exited normally, or prefork was stopped by a signal",
      "            1 a worker ended abnormally with --restart never",
      "            2 bad usage   3 too many restarts   4 cannot listen on a --listen address",
      "            126 the command could not be started   127 command not found (or not executable)"
    ].join("\n  ")
  ),
  Command.withExamples([
    {
      command: "prefork -n 4 -- node worker.js --queue jobs",
      description: "Four copies of a Node program; each reads its task id from PREFORK_TASK_ID"
    },
    {
      command: "prefork --max-restarts 10 --backoff 100ms -- python worker.py",
      description: "Any program: restart with backoff, give up after 10 restarts"
    },
    {
      command: "prefork -n 4 --listen 8080 -- node server.js",
      description: "prefork holds port 8080 and hands it to every worker as fd 3: server.listen({ fd: 3 })"
    },
    {
      command: "prefork -n 4 --listen 127.0.0.1:8000 -- gunicorn app:app",
      description:
        "Any language: gunicorn reads LISTEN_FDS (no --bind), uvicorn --fd 3, any socket-activation library serves fd 3"
    },
    {
      command: "prefork -n 4 --cluster -- node app.js",
      description: "node:cluster workers for an app that calls listen(port) itself (PM2's -i)"
    },
    {
      command: "prefork --ready message -- node server.js",
      description: "Reloads (SIGHUP) wait until each new worker calls Worker.ready"
    }
  ])
)

/**
 * `prefork` with these arguments (`process.argv.slice(2)`).
 *
 * @since 0.1.0
 * @category running
 */
export const run = CliRuntime.runWith(command)
