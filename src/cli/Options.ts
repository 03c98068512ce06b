/**
 * Every option of `prefork`, defined once: each entry of {@link options} gives
 * the command-line flag (`effect/cli`, what `--help` shows), the config file's
 * key of the same name with its validation (`ConfigFile`), and the option's
 * JSON Schema entry (`npm run schema`). A flag's value and the same key's value
 * in a config file are read by the same parser (`Argv.parseDuration`, …).
 *
 * To add an option: one entry in {@link options} made with `value`,
 * `choice`, `boolean` or `list` from `OptionKinds.ts` (the key is the camel-case
 * name `Input` gets, the first argument the long flag and config key), then
 * `npm run schema`.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Option from "effect/Option"
import * as Result from "effect/Result"
import { Argument, Command, Flag } from "effect/cli"
import * as Supervisor from "../Supervisor.ts"
import { cpuCount } from "../internal/cpus.ts"
import * as Argv from "./Argv.ts"
import * as Control from "./Control.ts"
import * as Names from "./Names.ts"
import * as Logging from "./Logging.ts"
import { boolean, choice, describe, type JsonSchema, list, type Opt, value, withDefault } from "./OptionKinds.ts"

export type { JsonSchema, Opt } from "./OptionKinds.ts"

const duration = (name: string, description: string, fallback: string) =>
  value(name, {
    metavar: "duration",
    description,
    fallback,
    parse: Argv.parseDuration,
    expected: "a duration such as 500ms, 5s, 1m or 1h",
    pattern: DURATION_PATTERN
  })

const DURATION_PATTERN = "^\\s*(0|\\d+(\\.\\d+)?(ms|s|m|h)|\\d+(\\.\\d+)?\\s+[a-z]+)\\s*$"

type Ready = "spawn" | "message" | { readonly delay: Duration.Duration }

const parseReady = (text: string): Option.Option<Ready> =>
  text === "spawn" || text === "message"
    ? Option.some(text)
    : Option.map(Argv.parseDuration(text), (delay) => ({ delay }))

const parseInteger = (text: string): Option.Option<number> =>
  /^\s*-?\d{1,9}\s*$/.test(text) ? Option.some(Number(text)) : Option.none()

const parseFinite = (text: string): Option.Option<number> => {
  const n = text.trim() === "" ? NaN : Number(text)
  return Number.isFinite(n) ? Option.some(n) : Option.none()
}

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
 * Every option of `prefork`, in `--help`'s order. Each description ends with
 * its default.
 *
 * @since 0.1.0
 * @category options
 */
export const options = {
  processes: withDefault(
    value("processes", {
      alias: "n",
      metavar: "integer",
      description:
        "How many workers; 0 or less means one per CPU (the CPUs prefork may use, capped by its container's CPU quota)",
      fallback: `${cpuCount().count} here`,
      schemaFallback: "0, one per CPU",
      parse: parseInteger,
      expected: "a whole number",
      numbers: "integer"
    }),
    0
  ),
  restart: withDefault(
    choice("restart", ["on-failure", "always", "never"], {
      description: "Which exits restart a worker: abnormal ones (Tornado), every one, or none",
      fallback: "on-failure"
    }),
    "on-failure"
  ),
  normalExitCodes: value("normal-exit-codes", {
    metavar: "codes",
    description: "Exit codes that count as a normal exit",
    fallback: "0",
    parse: Argv.parseCodes,
    expected: "a comma-separated list of exit codes 0..255, such as 0,3",
    numbers: "integer"
  }),
  maxRestarts: value("max-restarts", {
    metavar: "n",
    description:
      "Restarts allowed in all, over prefork's whole life, shared by every worker, before giving up (exit 3); replaces the default --intensity",
    fallback: "no limit",
    parse: Argv.parseCount,
    expected: "a whole number, or infinity",
    numbers: "integer"
  }),
  intensity: value("intensity", {
    metavar: "n/duration",
    description:
      "Give up (exit 3) on a crash loop: more than n restarts within any window of this length, all workers together (OTP intensity), or each worker alone with ,per-worker",
    fallback: `${DEFAULT_INTENSITY.maxRestarts}/${Duration.format(DEFAULT_INTENSITY.within)},per-worker; none with --max-restarts alone`,
    parse: Argv.parseIntensity,
    expected: "<restarts>/<window>[,per-worker], such as 5/10s"
  }),
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
  backoffFactor: value("backoff-factor", {
    metavar: "number",
    description: "How much each backoff grows",
    fallback: "2",
    parse: parseFinite,
    expected: "a number",
    numbers: "number"
  }),
  resetAfter: duration("reset-after", "A worker that ran this long starts its backoff from zero", "10s"),
  stopTimeout: duration(
    "stop-timeout",
    "How long workers may take to exit after SIGTERM, all together, before SIGKILL",
    "5s"
  ),
  shutdownDelay: duration(
    "shutdown-delay",
    "On SIGTERM or SIGINT, keep every worker serving this long before stopping them (--health's /readyz answers 503 at once), so a load balancer or Kubernetes stops sending traffic first; a second signal cuts it short",
    "0"
  ),
  ready: withDefault(
    value("ready", {
      metavar: "spawn|message|duration",
      description:
        "When a worker counts as ready (for reloads): when started, when a Node worker calls Worker.ready, or after a delay",
      fallback: "spawn",
      parse: parseReady,
      expected: "spawn, message, or a duration such as 2s"
    }),
    "spawn" as Ready
  ),
  readyTimeout: duration(
    "ready-timeout",
    "A worker not ready this long after its start is stopped and counts as a failure",
    "30s"
  ),
  heartbeat: value("heartbeat", {
    metavar: "duration",
    description:
      "Kill and restart (a failure) a ready worker that sends no heartbeat for this long: node and --cluster workers beat by themselves (run with an IPC channel); any other command writes a byte to the fd in PREFORK_HEARTBEAT_FD",
    fallback: "off",
    parse: Argv.parsePositiveDuration,
    expected: "a duration above 0, such as 10s or 1m",
    pattern: DURATION_PATTERN
  }),
  maxMemory: value("max-memory", {
    metavar: "size",
    description:
      "Recycle a worker whose process group stays above this resident memory (two samples in a row): a graceful replacement that spends no budget",
    fallback: "none",
    parse: Supervisor.parseBytes,
    expected: "a size such as 512M, 1.5G or 800K (powers of 1024), or bytes",
    numbers: "integer"
  }),
  maxLifetime: value("max-lifetime", {
    metavar: "duration",
    description:
      "Recycle each worker once it has been ready this long, plus a random --lifetime-jitter: a graceful replacement that spends no budget",
    fallback: "none",
    parse: Argv.parsePositiveDuration,
    expected: "a duration above 0, such as 6h",
    pattern: DURATION_PATTERN
  }),
  lifetimeJitter: duration(
    "lifetime-jitter",
    "The most random time added to each worker's --max-lifetime, so workers do not recycle together",
    "a tenth of --max-lifetime"
  ),
  spares: value("spares", {
    metavar: "n",
    description:
      "Keep this many Node workers booted and waiting for a task id (Worker.activated()): one takes over a dead worker's task id at once",
    fallback: "0",
    parse: Argv.parseWhole,
    expected: "a whole number, 0 or more",
    numbers: "integer"
  }),
  metrics: value("metrics", {
    metavar: "addr",
    description:
      "Serve Prometheus metrics on http://addr/metrics: workers by state, restarts by reason, spawn and ready durations, restart budget, memory",
    fallback: "off",
    parse: Argv.parseHostPort,
    expected: "host:port or :port, such as 127.0.0.1:9464 (port 0: any free port)",
    numbers: "integer"
  }),
  health: value("health", {
    metavar: "addr",
    description:
      "Serve health checks on http://addr: /livez (prefork answers), /readyz (every worker ready, not stopping: else 503), /startupz (every worker was ready once), for Kubernetes' probes",
    fallback: "off",
    parse: Argv.parseHostPort,
    expected: "host:port or :port, such as 127.0.0.1:8081 (port 0: any free port)",
    numbers: "integer"
  }),
  listen: list("listen", {
    metavar: "addr",
    description:
      "Bind this address before any worker starts, hold it while workers restart, and hand it to every worker as fd 3, 4, … with LISTEN_FDS (node: server.listen({ fd: 3 }); gunicorn reads LISTEN_FDS by itself, with no --bind); repeat for more: 8080, 127.0.0.1:0, [::1]:8080, unix:/run/app.sock (mode 0660; unix:/run/app.sock,mode=0666 to choose)",
    fallback: "none, or the sockets of socket activation"
  }),
  cluster: withDefault(
    boolean("cluster", {
      description:
        "Run `node script.js` as node:cluster workers sharing the ports they listen on (as PM2's -i); ready when listening. A reload keeps the port open and drains each old worker's HTTP servers (keep-alive connections end with Connection: close): no request lost; its WebSocket and raw TCP connections end with it, and with --no-drain its keep-alive connections are reset",
      fallback: "off"
    }),
    false
  ),
  drain: withDefault(
    boolean("drain", {
      description:
        "Node workers (node script.js, --cluster) drain their HTTP servers on SIGTERM with no code of their own: stop accepting, finish requests in flight, Connection: close on keep-alive, exit once nothing is open; with --listen, a listen(port) on a socket's address serves that socket and a worker is ready when it listens. --no-drain runs workers exactly as given",
      fallback: "on"
    }),
    true
  ),
  env: list("env", {
    alias: "e",
    metavar: "KEY=VALUE",
    description: "Set a variable for every worker; repeat for more",
    fallback: "prefork's own environment",
    parse: Argv.parseEnv,
    expected: "KEY=VALUE",
    entries: true
  }),
  watch: list("watch", {
    metavar: "path",
    description:
      "For development: reload the workers (as SIGHUP does) when files under this path change; repeat for more",
    fallback: "off"
  }),
  watchIgnore: list("watch-ignore", {
    metavar: "glob",
    description: "Changes to matching paths (relative to the watched one) cause no reload; repeat for more",
    fallback: "node_modules and .git"
  }),
  watchDebounce: duration(
    "watch-debounce",
    "A burst of changes reloads once, after it has been quiet this long",
    "300ms"
  ),
  user: value("user", {
    metavar: "name|uid",
    description:
      "Run every worker as this user, with its primary group (prefork must be root: it binds --listen first, then drops privileges for the workers)",
    fallback: "prefork's own",
    parse: Option.some,
    expected: "a user name or uid",
    numbers: "integer"
  }),
  group: value("group", {
    metavar: "name|gid",
    description: "Run every worker with this group",
    fallback: "the --user's primary group, or prefork's own",
    parse: Option.some,
    expected: "a group name or gid",
    numbers: "integer"
  }),
  control: value("control", {
    metavar: "path|off",
    description:
      "The control socket `prefork ctl` talks to (status, restart, reload, scale, stop), mode 0600 in a directory of mode 0700 (see docs/cli.md); off for none",
    fallback: Control.defaultPath(),
    schemaFallback: "a socket in the user's private runtime directory (see docs/cli.md)",
    parse: Option.some,
    expected: "a path, or off"
  }),
  name: value("name", {
    metavar: "name",
    description:
      "This prefork's name, for `prefork ctl -n <name>` and `prefork ctl ls`: its control socket is <name>.sock in the user's private runtime directory; a name a running prefork holds is refused",
    fallback:
      "the script's name (node server.js: server), or the program's; server-2, server-3, … while a running prefork holds it",
    parse: (text) => (Names.invalid(text) === undefined ? Option.some(text) : Option.none()),
    expected: "a letter or digit, then up to 63 letters, digits, '.', '_' or '-'",
    pattern: Names.PATTERN.source
  }),
  pidFile: value("pid-file", {
    metavar: "file",
    description: "Write prefork's own pid to this file while it runs (the process to signal), removed at exit",
    fallback: "none",
    parse: Option.some,
    expected: "a path"
  }),
  cwd: value("cwd", {
    metavar: "dir",
    description: "The workers' working directory",
    fallback: "prefork's own",
    parse: Option.some,
    expected: "a path"
  }),
  prefix: withDefault(
    boolean("prefix", {
      description: "Prefix each output line with [task:pid]; --no-prefix passes output through untouched",
      fallback: "on"
    }),
    true
  ),
  logFormat: withDefault(
    choice("log-format", Logging.FORMATS, {
      description: "How prefork's own messages are written to stderr",
      fallback: "pretty"
    }),
    "pretty" as Logging.Format
  )
} as const

/**
 * The program to run, and its arguments: everything from the first operand
 * on (see `Argv.splitCommand`). It may come from the config file instead.
 *
 * @since 0.1.0
 * @category options
 */
export const commandArgument = Argument.String("command").pipe(
  Argument.withDescription("The program to run in every worker, and its arguments, passed verbatim (no shell)"),
  Argument.variadic({ min: 0 })
)

/**
 * The config file's name, looked for in the working directory (see `ConfigFile`).
 *
 * @since 0.1.0
 * @category options
 */
export const CONFIG_NAME = "prefork.json"

/**
 * `--config`: a command-line flag only, not a config key.
 *
 * @since 0.1.0
 * @category options
 */
export const configFlag = Flag.String("config").pipe(
  Flag.withMetavar("file|off"),
  Flag.withDescription(
    describe(
      "Read options from this JSON file: keys are the long flag names, and command (see docs/cli.md); flags given here override it; off for none",
      `./${CONFIG_NAME} if it exists`
    )
  ),
  Flag.optional
)

type Options = typeof options

/**
 * The flags `effect/cli` parses: one per option, and the command.
 *
 * @since 0.1.0
 * @category options
 */
export const flags: { readonly [K in keyof Options]: Options[K]["flag"] } & {
  readonly config: typeof configFlag
  readonly command: typeof commandArgument
} = {
  ...(Object.fromEntries(Object.entries(options).map(([key, opt]) => [key, opt.flag])) as {
    readonly [K in keyof Options]: Options[K]["flag"]
  }),
  config: configFlag,
  command: commandArgument
}

/**
 * What the command line says, parsed, before defaults: absent options are
 * `Option.none()` or empty lists.
 *
 * @since 0.1.0
 * @category options
 */
export type Given = Command.Command.Config.Infer<typeof flags>

/**
 * Every option's value, defaults applied: what `Command.toOptions` reads.
 *
 * @since 0.1.0
 * @category options
 */
export type Input = {
  readonly [K in keyof Options]: Options[K] extends Opt<any, infer R> ? R : never
} & { readonly command: ReadonlyArray<string> }

/**
 * What a config file gives: any option, in the command line's form, and the command.
 *
 * @since 0.1.0
 * @category options
 */
export type FromFile = { -readonly [K in keyof Options]?: Given[K] } & { command?: ReadonlyArray<string> }

/**
 * Applies the config file's values (`file`) and then the defaults to what the
 * command line gives: an option on the command line wins over the file's (a
 * repeated one replaces the file's whole list), as does a command.
 *
 * @since 0.1.0
 * @category options
 */
export const resolve = (given: Given, file: FromFile = {}): Input =>
  ({
    ...Object.fromEntries(
      Object.entries(options).map(([key, opt]) => {
        const cli = given[key as keyof Options]
        const fromFile = file[key as keyof Options]
        const o = opt as Opt<unknown, unknown>
        return [key, o.resolve(o.given(cli) || fromFile === undefined ? cli : fromFile)]
      })
    ),
    command: given.command.length > 0 ? given.command : (file.command ?? [])
  }) as Input

/**
 * The option a config file's key names, if any.
 *
 * @since 0.1.0
 * @category options
 */
export const byName: ReadonlyMap<string, readonly [keyof Options, Opt<unknown, unknown>]> = new Map(
  Object.entries(options).map(([key, opt]) => [opt.name, [key as keyof Options, opt as Opt<unknown, unknown>]])
)

/**
 * The JSON Schema of a config file (draft 2020-12), from the same definition
 * as the flags: what `npm run schema` writes to `schema/prefork.schema.json`.
 *
 * @since 0.1.0
 * @category options
 */
export const schema = (): JsonSchema => ({
  $schema: "https://json-schema.org/draft/2020-12/schema",
  title: `prefork's config file (${CONFIG_NAME})`,
  description:
    "Every option of the prefork command, keyed by its long flag name, and the command to run. Flags on the command line override it. Generated from src/cli/Options.ts by npm run schema.",
  type: "object",
  additionalProperties: false,
  properties: {
    $schema: { description: "The schema this file follows (for editors)", type: "string" },
    command: {
      description: "The program to run in every worker, and its arguments, passed verbatim (no shell)",
      type: "array",
      items: { type: "string" },
      minItems: 1
    },
    ...Object.fromEntries(Object.values(options).map((opt) => [opt.name, opt.schema]))
  }
})

/**
 * The options that take a value from the next argument, and the boolean ones
 * (with the built-in `--help`, `--version` and `--log-level`): what
 * {@link Argv.splitCommand} needs to find where the command starts.
 *
 * @since 0.1.0
 * @category options
 */
export const VALUE_FLAGS: ReadonlySet<string> = new Set([
  ...Object.values(options).flatMap((opt) =>
    opt.takesValue ? [opt.name, ...(opt.alias === undefined ? [] : [opt.alias])] : []
  ),
  "config",
  "log-level"
])

/**
 * @since 0.1.0
 * @category options
 */
export const BOOLEAN_FLAGS: ReadonlySet<string> = new Set([
  ...Object.values(options).flatMap((opt) => (opt.takesValue ? [] : [opt.name, `no-${opt.name}`])),
  "help",
  "h",
  "version",
  "v"
])
