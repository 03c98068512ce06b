/**
 * What the spawners add to a worker so that it beats, can be a spare and
 * drains its HTTP servers with no code of its own: its environment
 * (`PREFORK_HEARTBEAT_MS`, `PREFORK_HEARTBEAT_FD`, `PREFORK_SPARE`,
 * `PREFORK_LISTEN_ADDRESSES`), and for Node workers (module and cluster
 * modes, and the command `node …`) a preload in their Node options.
 *
 * The preload is a `data:` module given to `--import`, not a file: a file
 * would have to be found from wherever the library runs (`src/*.ts`, `dist`,
 * or the `prefork` command bundled into one file), and a `data:` URL is the
 * same string in all of them. Its source travels in `PREFORK_PRELOAD`, which
 * a short `--import` takes and removes (see {@link importOption}), so the
 * worker's command line stays short in `ps`. In the worker's main thread, before its own
 * code, it:
 *
 * - sends `{ type: "effect-prefork/heartbeat" }` over the IPC channel every
 *   `PREFORK_HEARTBEAT_MS` milliseconds from an unref'd timer on the main
 *   event loop: a blocked loop sends nothing, and the timer never keeps the
 *   worker alive. A closed channel ends the timer; a failed send is ignored.
 * - in a spare (`PREFORK_SPARE=1`), waits for the primary's
 *   `{ type: "effect-prefork/activate", taskId }`, then sets
 *   `PREFORK_TASK_ID`, removes `PREFORK_SPARE`, removes its listeners (a
 *   `'message'` or `'disconnect'` listener keeps the channel, and so the
 *   worker, alive), and resolves the promise it published at
 *   `globalThis[Symbol.for("effect-prefork/activation")]`, which
 *   `Worker.activated` returns (with `undefined` if the channel closes
 *   first).
 * - unless the request says `drain: false`, serves the supervisor's sockets
 *   to a `listen(port)`, says when the worker listens, and drains its HTTP
 *   servers on SIGTERM: see `drain.ts`.
 *
 * It does all this only in a process whose parent is the primary that built
 * it (its pid is in the URL): a worker's own `fork()` children inherit its
 * Node options and environment, and must neither beat to the worker nor wait
 * for an activation that is not theirs.
 *
 * Heartbeat workers also get `--inspect-port=0` (unless their options name a
 * port): `ProcessHandle.diagnose` sends them SIGUSR1, which starts Node's
 * inspector, and two hung workers must not fight over port 9229.
 */
import * as Path from "node:path"
import * as Duration from "effect/Duration"
import type { SpawnRequest } from "../../ProcessSpawner.ts"
import { ENV_VAR } from "../../TaskId.ts"
import { ACTIVATION_KEY, SPARE_ENV_VAR } from "../../Worker.ts"
import * as Drain from "./drain.ts"

/** The interval of a worker's heartbeats, in milliseconds. */
export const HEARTBEAT_MS_VAR = "PREFORK_HEARTBEAT_MS"

/** A command worker's heartbeat descriptor: it beats by writing any byte to it. */
export const HEARTBEAT_FD_VAR = "PREFORK_HEARTBEAT_FD"

/** The largest delay a Node timer takes (a longer one fires after 1 ms). */
const MAX_TIMER = 2 ** 31 - 1

/**
 * The heartbeat interval in whole milliseconds (at least 1), or `undefined`
 * when the request asks for none (no `heartbeat`, or an infinite one).
 *
 * @internal
 */
export const heartbeatMillis = (request: SpawnRequest): number | undefined => {
  if (request.heartbeat === undefined || !Duration.isFinite(request.heartbeat)) return undefined
  return Math.min(MAX_TIMER, Math.max(1, Math.ceil(Duration.toMillis(request.heartbeat))))
}

/** The heartbeat and spare part of the preload's source, one line, for the primary `primaryPid`. */
const ipcSource = (primaryPid: number): string =>
  [
    `const env = process.env, key = Symbol.for(${JSON.stringify(ACTIVATION_KEY)});`,
    `if (typeof process.send === "function" && process.ppid === ${primaryPid}) {`,
    `const ms = Number(env.${HEARTBEAT_MS_VAR});`,
    `if (ms >= 1 && ms <= ${MAX_TIMER}) {`,
    `const beat = { type: "effect-prefork/heartbeat" }, ignore = () => {};`,
    `const timer = setInterval(() => {`,
    `if (!process.connected) return clearInterval(timer);`,
    `try { process.send(beat, undefined, undefined, ignore) } catch {}`,
    `}, ms);`,
    `timer.unref();`,
    `}`,
    `if (env.${SPARE_ENV_VAR} === "1" && globalThis[key] === undefined) {`,
    `globalThis[key] = new Promise((resolve) => {`,
    `const done = (id) => { process.off("message", onMessage); process.off("disconnect", onDisconnect); resolve(id) };`,
    `const onMessage = (m) => {`,
    `if (typeof m !== "object" || m === null || m.type !== "effect-prefork/activate") return;`,
    `const id = m.taskId;`,
    `if (!Number.isSafeInteger(id) || id < 0) return;`,
    `env.${ENV_VAR} = String(id);`,
    `delete env.${SPARE_ENV_VAR};`,
    `done(id);`,
    `};`,
    `const onDisconnect = () => done(undefined);`,
    `process.on("message", onMessage);`,
    `process.on("disconnect", onDisconnect);`,
    `});`,
    `}`,
    `}`
  ].join(" ")

/**
 * The preload's source for the primary `primaryPid`: the HTTP drain's import
 * first (an ES module's imports are its first statements), then the
 * heartbeats and spares, then the drain (see `drain.ts`), which runs only
 * where the primary is the parent. No `%` or `#`: see {@link dataUrl}.
 */
const source = (primaryPid: number, drain: boolean): string =>
  drain
    ? `${Drain.imports}\n${ipcSource(primaryPid)}\nif (process.ppid === ${primaryPid}) ${Drain.source}\n`
    : ipcSource(primaryPid)

/** The variable that carries the preload's source to the worker, which removes it before its own code runs. */
export const PRELOAD_VAR = "PREFORK_PRELOAD"

/**
 * The `--import` option every preloaded worker gets: a short `data:` module
 * that takes the preload's source from `PREFORK_PRELOAD`, removes the
 * variable, and imports the source as a `data:` module of its own. The
 * source travels in the environment, not on the command line, so that `ps`
 * shows the worker's command and not a page of JavaScript; removed at once,
 * it is seen neither by the worker's code nor by any process the worker
 * starts (a `fork()` child inherits the option and finds no source: it does
 * nothing). No `%`, `#` or `?` in it: Node 22.0 and 22.6 end a `data:`
 * module at an unescaped `?`.
 */
const IMPORT_OPTION =
  `--import=data:text/javascript,const s = process.env.${PRELOAD_VAR}; delete process.env.${PRELOAD_VAR};` +
  ` if (typeof s === "string") await import("data:text/javascript," + encodeURIComponent(s))`

/**
 * The preload as a `--import` option, for a worker whose Node options the
 * spawner does not control otherwise (the command `node app.js`: the option
 * goes before the script). The worker also needs {@link preloadEnvironment}.
 *
 * @internal
 */
export const importOption: string = IMPORT_OPTION

/**
 * The variable that carries the preload's source to a worker whose options
 * have {@link importOption}: nothing for any other worker.
 *
 * @internal
 */
export const preloadEnvironment = (
  options: ReadonlyArray<string>,
  request: SpawnRequest,
  primaryPid: number = process.pid
): Record<string, string> =>
  options.includes(IMPORT_OPTION) ? { [PRELOAD_VAR]: source(primaryPid, drains(request)) } : {}

/**
 * Whether a command is `node` (by name, or prefork's own `process.execPath`):
 * such a command gets the preload with its HTTP drain as a Node option.
 *
 * @internal
 */
export const isNode = (command: string): boolean =>
  command === process.execPath || /^node(js)?$/.test(Path.basename(command))

/**
 * Whether a request's Node worker gets the HTTP drain (see `drain.ts`): on
 * unless `drain: false`.
 *
 * @internal
 */
export const drains = (request: SpawnRequest): boolean => request.drain !== false

/** Does a Node option choose the inspector's port (or start it, with a port of its own)? */
const namesInspectPort = (option: string): boolean =>
  /^--(?:inspect|inspect-brk|inspect-wait|inspect-port|debug-port)=/.test(option)

/**
 * The Node options of a module or cluster worker: `base` (the request's own
 * or the primary's), with the preload first when the worker beats, is a
 * spare or drains (the default), and `--inspect-port=0` for a heartbeat worker whose options name no
 * port.
 *
 * @internal
 */
export const nodeOptions = (request: SpawnRequest, base: ReadonlyArray<string>): Array<string> => {
  const beats = heartbeatMillis(request) !== undefined
  const drain = drains(request)
  if (!beats && request.spare !== true && !drain) return [...base]
  return [IMPORT_OPTION, ...base, ...(beats && !base.some(namesInspectPort) ? ["--inspect-port=0"] : [])]
}

/**
 * Whether {@link nodeOptions} gave the worker `--inspect-port=0` (cluster
 * mode must then tell `node:cluster` the port too: it appends an
 * `--inspect-port` of its own to the options of a worker that uses the
 * inspector).
 *
 * @internal
 */
export const inspectsOnAnyPort = (options: ReadonlyArray<string>): boolean => options.includes("--inspect-port=0")

/**
 * The variables a worker must not inherit from the primary's environment: a
 * primary that is itself some supervisor's worker has them for itself.
 *
 * @internal
 */
export const OWN_VARS: ReadonlyArray<string> = [
  HEARTBEAT_MS_VAR,
  HEARTBEAT_FD_VAR,
  SPARE_ENV_VAR,
  Drain.ADDRESSES_VAR,
  PRELOAD_VAR
]

/**
 * The request's environment with the spawner's variables: a spare has
 * `PREFORK_SPARE=1` and no `PREFORK_TASK_ID`; a heartbeat worker has
 * `PREFORK_HEARTBEAT_MS` (and, given `fd`, `PREFORK_HEARTBEAT_FD`); a
 * worker with sockets and the drain has their addresses
 * (`PREFORK_LISTEN_ADDRESSES`, see `drain.ts`).
 *
 * @internal
 */
export const environment = (request: SpawnRequest, fd?: number): Record<string, string> => {
  const ms = heartbeatMillis(request)
  const { [ENV_VAR]: taskId, ...rest } = request.env
  return {
    ...rest,
    ...(request.spare === true || taskId === undefined ? {} : { [ENV_VAR]: taskId }),
    ...(request.spare === true ? { [SPARE_ENV_VAR]: "1" } : {}),
    ...(ms === undefined ? {} : { [HEARTBEAT_MS_VAR]: String(ms) }),
    ...(ms === undefined || fd === undefined ? {} : { [HEARTBEAT_FD_VAR]: String(fd) }),
    ...(drains(request) ? Drain.environment(request.sockets ?? []) : {})
  }
}
