/**
 * Real-process supervision for tests: a supervisor over Node fixtures, with
 * its events collected into an array and its log lines captured, every worker
 * tagged so the test can check that none is left.
 */
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import { Effect, Layer, Logger, Stream } from "effect"
import type * as Scope from "effect/Scope"
import * as NodeProcessSpawner from "../../src/node/NodeProcessSpawner.ts"
import type { ProcessSpawner } from "../../src/ProcessSpawner.ts"
import * as Supervisor from "../../src/Supervisor.ts"
import { makeTag } from "./procs.ts"

export const fixture = (name: string): string => fileURLToPath(new URL(`../fixtures/${name}`, import.meta.url))

/** A temporary directory removed when the scope closes. */
export const tempDir: Effect.Effect<string, never, Scope.Scope> = Effect.acquireRelease(
  Effect.sync(() => mkdtempSync(Path.join(tmpdir(), "prefork-test-"))),
  (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
)

export interface Captured {
  readonly lines: Array<string>
}

/** A logger that records each message (joined) so tests can assert the Tornado wording. */
export const captureLogs = (): { readonly captured: Captured; readonly layer: Layer.Layer<never> } => {
  const captured: Captured = { lines: [] }
  const logger = Logger.make<unknown, void>(({ message }) => {
    captured.lines.push((Array.isArray(message) ? message : [message]).map(String).join(" "))
  })
  return { captured, layer: Logger.layer([logger]) }
}

/** No log output: the default for tests that do not look at the lines. */
export const quiet: Layer.Layer<never> = Logger.layer([])

/**
 * The two ways workers are tied to their primary's life, for tests that must
 * hold on both: the kernel's parent-death signal through `setpriv`, and the
 * watchdog process (forced on, as on macOS).
 */
export const spawnerPaths = [
  { path: "setpriv", layer: NodeProcessSpawner.layer },
  { path: "watchdog", layer: NodeProcessSpawner.layerWith({ parentDeathSignal: false, watchdog: true }) }
] as const

/**
 * Starts a supervisor in the current scope, with a fresh tag in every
 * worker's environment and its events collected into an array.
 */
export const supervise = (
  options: Supervisor.Options,
  logs: Layer.Layer<never> = quiet,
  spawner: Layer.Layer<ProcessSpawner> = NodeProcessSpawner.layer
) =>
  Effect.gen(function* () {
    const { env, tag } = makeTag()
    const events: Array<Supervisor.Event> = []
    const handle = yield* Supervisor.start({ stdio: "ignore", ...options, env: { ...options.env, ...env } })
    yield* handle.events.pipe(
      Stream.runForEach((event) => Effect.sync(() => events.push(event))),
      Effect.forkScoped
    )
    // Let the subscription start before any worker can exit.
    yield* Effect.yieldNow
    return { handle, events, tag }
  }).pipe(Effect.provide(Layer.merge(spawner, logs)))

/** A supervisor over `node <fixture> ...args` commands. */
export const superviseNode = (
  name: string,
  args: ReadonlyArray<string>,
  options: Omit<Supervisor.Options, "command" | "args"> = {},
  logs: Layer.Layer<never> = quiet,
  spawner: Layer.Layer<ProcessSpawner> = NodeProcessSpawner.layer
) => supervise({ ...options, command: process.execPath, args: [fixture(name), ...args] }, logs, spawner)

/** Runs an effect and says how long it took, in real milliseconds. */
export const timed = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const t0 = Date.now()
    const a = yield* effect
    return [a, Date.now() - t0] as const
  })

export const started = (events: ReadonlyArray<Supervisor.Event>) =>
  events.filter((e): e is Extract<Supervisor.Event, { _tag: "Started" }> => e._tag === "Started")

export const exitedEvents = (events: ReadonlyArray<Supervisor.Event>) =>
  events.filter((e): e is Extract<Supervisor.Event, { _tag: "Exited" }> => e._tag === "Exited")
