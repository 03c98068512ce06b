/**
 * Running the real `prefork` bin as a user would: `node bin/prefork.js …`,
 * with `node` on the PATH being the Node that runs the tests, its stdout and
 * stderr collected, every process it starts tagged so the test can check that
 * none is left.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import { Deferred, Duration, Effect } from "effect"
import type * as Scope from "effect/Scope"
import { assertNoneLeft, eventually, makeTag } from "../helpers/procs.ts"

export const BIN = fileURLToPath(new URL("../../bin/prefork.js", import.meta.url))

export const fixture = (name: string): string => fileURLToPath(new URL(`../fixtures/${name}`, import.meta.url))

export interface Prefork {
  readonly child: ChildProcess
  readonly pid: number
  readonly tag: string
  /** Everything written so far. */
  readonly stdout: () => string
  readonly stderr: () => string
  /** Waits (bounded) for the exit: the code, or 128 + n for a signal. */
  readonly exit: Effect.Effect<{ readonly code: number | null; readonly signal: NodeJS.Signals | null }>
  readonly signal: (signal: NodeJS.Signals) => void
  /** Its XDG_RUNTIME_DIR: where its control socket is by default. */
  readonly runtimeDir: string
}

/**
 * Starts `prefork …args`. When the scope closes, prefork is SIGKILLed if it is
 * still running (by its pid), and the test fails if any process of its tag is
 * left.
 */
export const prefork = (
  args: ReadonlyArray<string>,
  options: { readonly cwd?: string; readonly env?: Record<string, string>; readonly detached?: boolean } = {}
): Effect.Effect<Prefork, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const { env: tagEnv, tag } = makeTag()
      const runtimeDir = mkdtempSync(Path.join(tmpdir(), "prefork-run-"))
      const env: Record<string, string | undefined> = {
        // A user's shell: no npm_* variables (under `npx vitest` the tests have them), so prefork is not "started by npm".
        ...Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.toLowerCase().startsWith("npm_"))),
        // `node` in a command is the Node running the tests.
        PATH: `${Path.dirname(process.execPath)}${Path.delimiter}${process.env["PATH"] ?? ""}`,
        NO_COLOR: undefined,
        FORCE_COLOR: undefined,
        // Each prefork its own runtime directory, so its default control socket is its own (tests run side by side).
        XDG_RUNTIME_DIR: runtimeDir,
        ...options.env,
        ...tagEnv
      }
      const child = spawn(process.execPath, [BIN, ...args], {
        cwd: options.cwd ?? process.cwd(),
        env,
        stdio: ["ignore", "pipe", "pipe"],
        detached: options.detached ?? false
      })
      const out: Array<Buffer> = []
      const err: Array<Buffer> = []
      child.stdout!.on("data", (chunk: Buffer) => out.push(chunk))
      child.stderr!.on("data", (chunk: Buffer) => err.push(chunk))
      const closed = Deferred.makeUnsafe<{ code: number | null; signal: NodeJS.Signals | null }>()
      child.on("close", (code, signal) => Deferred.doneUnsafe(closed, Effect.succeed({ code, signal })))
      const self: Prefork = {
        child,
        pid: child.pid!,
        tag,
        stdout: () => Buffer.concat(out).toString("utf8"),
        stderr: () => Buffer.concat(err).toString("utf8"),
        exit: Deferred.await(closed).pipe(
          Effect.timeoutOrElse({
            duration: "20 seconds",
            orElse: () => Effect.die(new Error(`prefork did not exit; stderr:\n${Buffer.concat(err).toString()}`))
          })
        ),
        signal: (signal) => void child.kill(signal),
        runtimeDir
      }
      return self
    }),
    (self) =>
      Effect.gen(function* () {
        if (self.child.exitCode === null && self.child.signalCode === null) self.child.kill("SIGKILL")
        yield* assertNoneLeft(self.tag, "5 seconds")
        rmSync(self.runtimeDir, { recursive: true, force: true })
      })
  )

/** Waits (bounded) until prefork's stderr contains `text`. */
export const stderrHas = (p: Prefork, text: string | RegExp, within: Duration.Input = "10 seconds") =>
  eventually(
    () => (typeof text === "string" ? p.stderr().includes(text) : text.test(p.stderr())) || undefined,
    within
  ).pipe(Effect.catchDefect(() => Effect.die(new Error(`stderr never had ${String(text)}:\n${p.stderr()}`))))

/** The lines of `<dir>/events` written by the cli-worker.js fixture: `[event, task, pid]`. */
export const events = (dir: string): Array<readonly [string, number, number]> => {
  const file = `${dir}/events`
  if (!existsSync(file)) return []
  return readFileSync(file, "utf8")
    .split("\n")
    .filter((line) => line.length > 0)
    .map((line) => {
      const [event, task, pid] = line.split(" ")
      return [event!, Number(task), Number(pid)] as const
    })
}

/** Waits (bounded) until `<dir>/events` has at least `n` lines matching. */
export const awaitEvents = (
  dir: string,
  n: number,
  match: (e: readonly [string, number, number]) => boolean,
  within: Duration.Input = "10 seconds"
) =>
  eventually(() => (events(dir).filter(match).length >= n ? true : undefined), within).pipe(
    Effect.catchDefect(() => Effect.die(new Error(`fewer than ${n} matching events:\n${JSON.stringify(events(dir))}`)))
  )

export const sleep = (d: Duration.Input) => Effect.sleep(d)
