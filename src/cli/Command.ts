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
import { statSync } from "node:fs"
import * as Path from "node:path"
import { NodePath, NodeStdio, NodeTerminal } from "@effect/platform-node"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FileSystem from "effect/FileSystem"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { Argument, CliConfig, CliOutput, Command, Flag, GlobalFlag } from "effect/cli"
import * as ChildProcessSpawner from "effect/process/ChildProcessSpawner"
import type { ExitRecord } from "../Errors.ts"
import { InvalidOptions } from "../Errors.ts"
import * as ExitStatus from "../ExitStatus.ts"
import * as NodeProcessSpawner from "../node/NodeProcessSpawner.ts"
import * as Supervisor from "../Supervisor.ts"
import * as Argv from "./Argv.ts"
import * as ExitCode from "./ExitCode.ts"
import * as Logging from "./Logging.ts"
import * as Metrics from "../Metrics.ts"
import * as MetricsServer from "./MetricsServer.ts"
import * as Orphan from "./Orphan.ts"
import * as Output from "./Output.ts"
import * as PidFile from "./PidFile.ts"
import { cpuCount } from "../internal/cpus.ts"
import * as Control from "./Control.ts"
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

const describe = (text: string, fallback: string) => `${text} (default: ${fallback})`

const duration = (name: string, text: string, fallback: string) =>
  Flag.String(name).pipe(
    Flag.withMetavar("duration"),
    Flag.filterMap(Argv.parseDuration, () => "a duration such as 500ms, 5s, 1m or 1h"),
    Flag.withDescription(describe(text, fallback)),
    Flag.optional
  )

type Ready = "spawn" | "message" | { readonly delay: Duration.Duration }

const parseReady = (text: string): Option.Option<Ready> =>
  text === "spawn" || text === "message"
    ? Option.some(text)
    : Option.map(Argv.parseDuration(text), (delay) => ({ delay }))

/**
 * The command's restart budget when neither `--max-restarts` nor
 * `--intensity` is given: a service's, not Tornado's lifetime total of 100
 * (the library's default). systemd's `StartLimitBurst=5` within
 * `StartLimitIntervalSec=10s`, counted as systemd counts it, per unit: a
 * worker restarted more than 5 times in any 10 seconds is in a crash loop and
 * prefork gives up (exit 3); every worker crashing once at the same moment
 * (a database that went away) is not a crash loop; crashes further apart are
 * restarted for ever, as PM2, systemd and supervisord do.
 *
 * @since 0.1.0
 * @category options
 */
export const DEFAULT_INTENSITY: {
  readonly maxRestarts: number
  readonly within: Duration.Duration
  readonly per: "worker"
} = {
  maxRestarts: 5,
  within: Duration.seconds(10),
  per: "worker"
}

/**
 * The command's backoff when `--backoff` is not given: 100 ms (systemd's
 * `RestartSec=`, PM2's first exponential delay), doubling per consecutive
 * failure of a worker up to 1 s, from zero again once a worker ran 10 s.
 * With {@link DEFAULT_INTENSITY}, a worker that dies within about a second of
 * starting (PM2's `min_uptime`, supervisord's `startsecs`) is a crash loop,
 * given up within 10 s; one that ran longer is restarted at most 1 s later.
 *
 * @since 0.1.0
 * @category options
 */
export const DEFAULT_BACKOFF: { readonly initial: Duration.Duration; readonly max: Duration.Duration } = {
  initial: Duration.millis(100),
  max: Duration.seconds(1)
}

/**
 * Every option of `prefork`. Each description ends with its default.
 *
 * @since 0.1.0
 * @category options
 */
export const flags = {
  processes: Flag.Int("processes").pipe(
    Flag.withAlias("n"),
    Flag.withDescription(
      describe(
        "How many workers; 0 or less means one per CPU (the CPUs prefork may use, capped by its container's CPU quota)",
        `${cpuCount().count} here`
      )
    ),
    Flag.withDefault(0)
  ),
  restart: Flag.Literals("restart", ["on-failure", "always", "never"] as const).pipe(
    Flag.withDescription(
      describe("Which exits restart a worker: abnormal ones (Tornado), every one, or none", "on-failure")
    ),
    Flag.withDefault("on-failure" as const)
  ),
  normalExitCodes: Flag.String("normal-exit-codes").pipe(
    Flag.withMetavar("codes"),
    Flag.filterMap(Argv.parseCodes, () => "a comma-separated list of exit codes 0..255, such as 0,3"),
    Flag.withDescription(describe("Exit codes that count as a normal exit", "0")),
    Flag.optional
  ),
  maxRestarts: Flag.String("max-restarts").pipe(
    Flag.withMetavar("n"),
    Flag.filterMap(Argv.parseCount, () => "a whole number, or infinity"),
    Flag.withDescription(
      describe(
        "Restarts allowed in all, over prefork's whole life, shared by every worker, before giving up (exit 3); replaces the default --intensity",
        "no limit"
      )
    ),
    Flag.optional
  ),
  intensity: Flag.String("intensity").pipe(
    Flag.withMetavar("n/duration"),
    Flag.filterMap(Argv.parseIntensity, () => "<restarts>/<window>[,per-worker], such as 5/10s"),
    Flag.withDescription(
      describe(
        "Give up (exit 3) on a crash loop: more than n restarts within any window of this length, all workers together (OTP intensity), or each worker alone with ,per-worker",
        `${DEFAULT_INTENSITY.maxRestarts}/${Duration.format(DEFAULT_INTENSITY.within)},per-worker; none with --max-restarts alone`
      )
    ),
    Flag.optional
  ),
  backoff: duration(
    "backoff",
    "Wait before restarting a worker that keeps failing, doubling each time; 0 for none",
    Duration.format(DEFAULT_BACKOFF.initial)
  ),
  backoffMax: duration(
    "backoff-max",
    "The longest backoff",
    `${Duration.format(DEFAULT_BACKOFF.max)}, or 30s with --backoff`
  ),
  backoffFactor: Flag.Finite("backoff-factor").pipe(
    Flag.withDescription(describe("How much each backoff grows", "2")),
    Flag.optional
  ),
  resetAfter: duration("reset-after", "A worker that ran this long starts its backoff from zero", "10s"),
  stopTimeout: duration(
    "stop-timeout",
    "How long workers may take to exit after SIGTERM, all together, before SIGKILL",
    "5s"
  ),
  ready: Flag.String("ready").pipe(
    Flag.withMetavar("spawn|message|duration"),
    Flag.filterMap(parseReady, () => "spawn, message, or a duration such as 2s"),
    Flag.withDescription(
      describe(
        "When a worker counts as ready (for reloads): when started, when a Node worker calls Worker.ready, or after a delay",
        "spawn"
      )
    ),
    Flag.withDefault("spawn" as Ready)
  ),
  readyTimeout: duration(
    "ready-timeout",
    "A worker not ready this long after its start is stopped and counts as a failure",
    "30s"
  ),
  heartbeat: Flag.String("heartbeat").pipe(
    Flag.withMetavar("duration"),
    Flag.filterMap(Argv.parsePositiveDuration, () => "a duration above 0, such as 10s or 1m"),
    Flag.withDescription(
      describe(
        "Kill and restart (a failure) a ready worker that sends no heartbeat for this long: node and --cluster workers beat by themselves (run with an IPC channel); any other command writes a byte to the fd in PREFORK_HEARTBEAT_FD",
        "off"
      )
    ),
    Flag.optional
  ),
  maxMemory: Flag.String("max-memory").pipe(
    Flag.withMetavar("size"),
    Flag.filterMap(Supervisor.parseBytes, () => "a size such as 512M, 1.5G or 800K (powers of 1024), or bytes"),
    Flag.withDescription(
      describe(
        "Recycle a worker whose process group stays above this resident memory (two samples in a row): a graceful replacement that spends no budget",
        "none"
      )
    ),
    Flag.optional
  ),
  maxLifetime: Flag.String("max-lifetime").pipe(
    Flag.withMetavar("duration"),
    Flag.filterMap(Argv.parsePositiveDuration, () => "a duration above 0, such as 6h"),
    Flag.withDescription(
      describe(
        "Recycle each worker once it has been ready this long, plus a random --lifetime-jitter: a graceful replacement that spends no budget",
        "none"
      )
    ),
    Flag.optional
  ),
  lifetimeJitter: duration(
    "lifetime-jitter",
    "The most random time added to each worker's --max-lifetime, so workers do not recycle together",
    "a tenth of --max-lifetime"
  ),
  spares: Flag.String("spares").pipe(
    Flag.withMetavar("n"),
    Flag.filterMap(Argv.parseWhole, () => "a whole number, 0 or more"),
    Flag.withDescription(
      describe(
        "Keep this many Node workers booted and waiting for a task id (Worker.activated()): one takes over a dead worker's task id at once",
        "0"
      )
    ),
    Flag.optional
  ),
  metrics: Flag.String("metrics").pipe(
    Flag.withMetavar("addr"),
    Flag.filterMap(Argv.parseHostPort, () => "host:port or :port, such as 127.0.0.1:9464 (port 0: any free port)"),
    Flag.withDescription(
      describe(
        "Serve Prometheus metrics on http://addr/metrics: workers by state, restarts by reason, spawn and ready durations, restart budget, memory",
        "off"
      )
    ),
    Flag.optional
  ),
  listen: Flag.String("listen").pipe(
    Flag.withMetavar("addr"),
    Flag.withDescription(
      describe(
        "Bind this address before any worker starts, hold it while workers restart, and hand it to every worker as fd 3, 4, … with LISTEN_FDS (node: server.listen({ fd: 3 }); gunicorn --bind fd://3); repeat for more: 8080, 127.0.0.1:0, [::1]:8080, unix:/run/app.sock (mode 0660; unix:/run/app.sock,mode=0666 to choose)",
        "none, or the sockets of socket activation"
      )
    ),
    Flag.atLeast(0)
  ),
  cluster: Flag.Boolean("cluster").pipe(
    Flag.withDescription(
      describe(
        "Run `node script.js` as node:cluster workers sharing the ports they listen on (PM2's -i); ready when listening",
        "off"
      )
    ),
    Flag.withDefault(false)
  ),
  env: Flag.String("env").pipe(
    Flag.withAlias("e"),
    Flag.withMetavar("KEY=VALUE"),
    Flag.filterMap(Argv.parseEnv, () => "KEY=VALUE"),
    Flag.withDescription(describe("Set a variable for every worker; repeat for more", "prefork's own environment")),
    Flag.atLeast(0)
  ),
  watch: Flag.String("watch").pipe(
    Flag.withMetavar("path"),
    Flag.withDescription(
      describe(
        "For development: reload the workers (as SIGHUP does) when files under this path change; repeat for more",
        "off"
      )
    ),
    Flag.atLeast(0)
  ),
  watchIgnore: Flag.String("watch-ignore").pipe(
    Flag.withMetavar("glob"),
    Flag.withDescription(
      describe(
        "Changes to matching paths (relative to the watched one) cause no reload; repeat for more",
        "node_modules and .git"
      )
    ),
    Flag.atLeast(0)
  ),
  watchDebounce: duration(
    "watch-debounce",
    "A burst of changes reloads once, after it has been quiet this long",
    "300ms"
  ),
  user: Flag.String("user").pipe(
    Flag.withMetavar("name|uid"),
    Flag.withDescription(
      describe(
        "Run every worker as this user, with its primary group (prefork must be root: it binds --listen first, then drops privileges for the workers)",
        "prefork's own"
      )
    ),
    Flag.optional
  ),
  group: Flag.String("group").pipe(
    Flag.withMetavar("name|gid"),
    Flag.withDescription(describe("Run every worker with this group", "the --user's primary group, or prefork's own")),
    Flag.optional
  ),
  control: Flag.String("control").pipe(
    Flag.withMetavar("path|off"),
    Flag.withDescription(
      describe(
        "The control socket `prefork ctl` talks to (status, restart, reload, scale), mode 0600 in a directory of mode 0700 (see docs/cli.md); off for none",
        Control.defaultPath()
      )
    ),
    Flag.optional
  ),
  pidFile: Flag.String("pid-file").pipe(
    Flag.withMetavar("file"),
    Flag.withDescription(
      describe("Write prefork's own pid to this file while it runs (the process to signal), removed at exit", "none")
    ),
    Flag.optional
  ),
  cwd: Flag.String("cwd").pipe(
    Flag.withMetavar("dir"),
    Flag.withDescription(describe("The workers' working directory", "prefork's own")),
    Flag.optional
  ),
  prefix: Flag.Boolean("prefix").pipe(
    Flag.withDescription(
      describe("Prefix each output line with [task:pid]; --no-prefix passes output through untouched", "on")
    ),
    Flag.withDefault(true)
  ),
  logFormat: Flag.Literals("log-format", Logging.FORMATS).pipe(
    Flag.withDescription(describe("How prefork's own messages are written to stderr", "pretty")),
    Flag.withDefault("pretty" as Logging.Format)
  ),
  command: Argument.String("command").pipe(
    Argument.withDescription("The program to run in every worker, and its arguments, passed verbatim (no shell)"),
    Argument.variadic({ min: 1 })
  )
} as const

/**
 * What the command line says, parsed.
 *
 * @since 0.1.0
 * @category options
 */
export type Input = Command.Command.Config.Infer<typeof flags>

/**
 * The options that take a value from the next argument, and the boolean ones
 * (with the built-in `--help`, `--version` and `--log-level`): what
 * {@link Argv.splitCommand} needs to find where the command starts.
 *
 * @since 0.1.0
 * @category options
 */
export const VALUE_FLAGS: ReadonlySet<string> = new Set([
  "processes",
  "n",
  "restart",
  "normal-exit-codes",
  "max-restarts",
  "intensity",
  "backoff",
  "backoff-max",
  "backoff-factor",
  "reset-after",
  "stop-timeout",
  "ready",
  "ready-timeout",
  "heartbeat",
  "max-memory",
  "max-lifetime",
  "lifetime-jitter",
  "spares",
  "metrics",
  "listen",
  "pid-file",
  "control",
  "watch",
  "watch-ignore",
  "watch-debounce",
  "user",
  "group",
  "env",
  "e",
  "cwd",
  "log-format",
  "log-level"
])

/**
 * @since 0.1.0
 * @category options
 */
export const BOOLEAN_FLAGS: ReadonlySet<string> = new Set([
  "prefix",
  "no-prefix",
  "cluster",
  "no-cluster",
  "help",
  "h",
  "version",
  "v"
])

const isNode = (command: string): boolean => command === process.execPath || /^node(js)?$/.test(Path.basename(command))

const usage = (field: string, message: string) => new InvalidOptions({ field, message })

/**
 * Turns the parsed command line into supervisor options, refusing what the
 * parser cannot see: `--ready message` for a program that is not Node, a
 * `--cwd` that is not a directory. Without `--max-restarts` or `--intensity`
 * the budget is {@link DEFAULT_INTENSITY}; without `--backoff` the backoff is
 * {@link DEFAULT_BACKOFF}.
 *
 * `--ready message` needs an IPC channel: `node <args…>` then runs under
 * prefork's own Node binary (`process.execPath`) in module mode, with the
 * arguments unchanged.
 *
 * @since 0.1.0
 * @category options
 */
export const toOptions = (
  input: Input,
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
    } else if ((Option.isSome(input.heartbeat) || spares) && isNode(command) && args.length > 0) {
      // A Node program beats from its own event loop, and a spare waits for its task id, over IPC: module mode.
      run = { mode: "module", command: args[0]!, args: args.slice(1), execArgv: [] }
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
        ? { intensity: DEFAULT_INTENSITY }
        : option("intensity", input.intensity)),
      backoff: {
        initial: Option.getOrElse(input.backoff, () => DEFAULT_BACKOFF.initial),
        ...(Option.isNone(input.backoff) ? { max: DEFAULT_BACKOFF.max } : {}),
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

const stderr = process.stderr

/** A usage error as the shell shows it: what was wrong, then how to get help. */
const usageText = (messages: ReadonlyArray<string>): string =>
  messages.map((m) => `prefork: ${m}\n`).join("") +
  "Usage: prefork [options] [--] <command> [args...]\nRun 'prefork --help' for every option and its default.\n"

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
export const supervise = (input: Input) => {
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
      if (Option.isSome(input.pidFile)) yield* PidFile.hold(input.pidFile.value)
      const listener = yield* Signals.listen()
      // Started by npm or npx: npm's SIGTERM does not reach prefork through `sh -c`, so npm's going away stops it.
      yield* Orphan.watch(process.env)
      if (Option.isSome(input.metrics)) {
        // Serving before any worker starts: the first scrape sees them start.
        yield* Metrics.register
        const url = yield* MetricsServer.serve(input.metrics.value, Argv.formatHostPort(input.metrics.value))
        yield* Effect.logInfo(`Metrics on ${url}`)
      }
      const handle = yield* Supervisor.start(options)
      yield* Effect.forkScoped(Signals.control(handle, listener, report(handle)))
      const control = Option.getOrElse(input.control, () => Control.defaultPath())
      if (control !== "off") {
        yield* Control.serve(handle, control).pipe(
          Effect.andThen(
            Effect.logDebug(`Control socket: ${control} (prefork ctl status | restart <task> | reload | scale <n>)`)
          ),
          Effect.catch((why) =>
            // The default place taken (another prefork runs there, or not trusted) is no reason not to run; a chosen one is.
            Option.isSome(input.control)
              ? Effect.fail(usage("control", `--control: ${why.message}`))
              : Effect.logWarning(`No control socket: ${why.message}; choose one with --control <path>`)
          )
        )
      }
      if (input.watch.length > 0) {
        yield* Watch.watch({
          paths: input.watch,
          ignore: input.watchIgnore,
          debounce: Option.getOrElse(input.watchDebounce, () => Duration.millis(300)),
          onChange: (files) =>
            Effect.logInfo(
              `Changed: ${files.slice(0, 3).join(", ")}${files.length > 3 ? ` and ${files.length - 3} more` : ""}; reloading`
            ).pipe(
              Effect.andThen(handle.reload()),
              Effect.andThen(Effect.logInfo("Reload finished")),
              Effect.catch((error) => Effect.logWarning(`Reload stopped: ${error.message}`))
            )
        }).pipe(Effect.catch((error) => Effect.fail(usage("watch", error.message))))
        yield* Effect.logInfo(`Watching ${input.watch.join(", ")} for changes (a change reloads every worker)`)
      }
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
        ? Effect.sync(() => void stderr.write(usageText([error.message])))
        : error._tag === "ExitWith"
          ? Effect.void
          : Effect.logError(error.message)
    ),
    Effect.tapDefect((defect) => Effect.logError("prefork failed unexpectedly", defect)),
    Effect.provide(Layer.merge(NodeProcessSpawner.layer, Logging.layer(input.logFormat, stderr, color)))
  )
}

/**
 * @since 0.1.0
 * @category commands
 */
export const command = Command.make("prefork", flags, supervise).pipe(
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
      command: "prefork -n 4 --listen 127.0.0.1:8000 -- gunicorn --bind fd://3 app:app",
      description: "Any language: gunicorn, uvicorn --fd 3, or any socket-activation library serves fd 3"
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

// Usage errors: what was wrong and how to get help, on stderr; the full help only when asked for.
const presenter: CliOutput.Presenter = {
  present: (event) =>
    event._tag === "InvalidInvocation"
      ? Effect.sync(() => void stderr.write(usageText(event.errors.map((e) => e.message))))
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
  )
)

/**
 * `prefork` with these arguments (`process.argv.slice(2)`).
 *
 * @since 0.1.0
 * @category running
 */
export const run = (argv: ReadonlyArray<string>) =>
  Command.runWith(command, { version: VERSION })(Argv.splitCommand(argv, VALUE_FLAGS, BOOLEAN_FLAGS)).pipe(
    Effect.provide(
      Layer.mergeAll(
        services,
        CliConfig.layer({ builtIns: [GlobalFlag.Help, GlobalFlag.Version, GlobalFlag.LogLevel] }),
        CliOutput.layerPresenter(presenter)
      )
    )
  )
