/**
 * FAULTS row 46: SIGTERM to the process a user starts, `npm start` (whose
 * script is prefork) or `npx prefork`, stops every worker once, gracefully,
 * and nothing is left. npm forwards the signal to `sh -c`, which dies of it
 * without passing it on; prefork, seeing its parent gone, stops as on SIGTERM.
 * A prefork started directly (no npm in its environment) keeps running when
 * its parent exits, as a daemon does.
 *
 * Ctrl-C (SIGINT to the whole group) stops every worker once whatever npm's
 * script shell: with dash, prefork exits 0 and npm then dies of SIGINT (a
 * shell shows 130: the shell and npm, not prefork); with bash, which execs
 * prefork, npm's copy of the SIGINT is not taken for a second Ctrl-C, and npm
 * exits 0.
 */
import { spawn } from "node:child_process"
import { mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs"
import * as Path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { assertNoneLeft, eventually, makeTag, pidsWithTag } from "../helpers/procs.ts"
import { tempDir } from "../helpers/supervise.ts"
import { BIN, fixture } from "./prefork.ts"

/** The environment of a user's shell: `node` is the tests' Node, no npm variables (npm sets its own), tagged. */
const userEnv = (tag: Record<string, string>, runtimeDir: string): Record<string, string> => {
  const env: Record<string, string> = {}
  for (const [key, value] of Object.entries(process.env)) {
    if (value !== undefined && !key.toLowerCase().startsWith("npm_")) env[key] = value
  }
  return {
    ...env,
    PATH: `${Path.dirname(process.execPath)}${Path.delimiter}${process.env["PATH"] ?? ""}`,
    XDG_RUNTIME_DIR: runtimeDir,
    ...tag
  }
}

/** Starts a command in its own process group, its output collected; SIGKILLed (by pid) when the scope closes if still there. */
const start = (command: string, args: ReadonlyArray<string>, cwd: string, env: Record<string, string>) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const child = spawn(command, args, { cwd, env, stdio: ["ignore", "pipe", "pipe"], detached: true })
      let output = ""
      child.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString("utf8")))
      child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString("utf8")))
      return { child, output: () => output }
    }),
    ({ child }) =>
      Effect.sync(() => {
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
      })
  )

const ready = (dir: string, n: number) =>
  eventually(
    () => (readdirSync(dir).filter((f) => f.startsWith("ready-")).length === n ? true : undefined),
    "20 seconds"
  )

/** A package in `dir` whose `node_modules/.bin/prefork` is the bundled command and whose start script runs it. */
const npmPackage = (dir: string, workers: string) => {
  mkdirSync(Path.join(dir, "node_modules", ".bin"), { recursive: true })
  symlinkSync(BIN, Path.join(dir, "node_modules", ".bin", "prefork"))
  const script = `prefork -n 2 -- node ${JSON.stringify(fixture("signal-log.js"))} ${JSON.stringify(workers)}`
  writeFileSync(
    Path.join(dir, "package.json"),
    JSON.stringify({ name: "app", version: "1.0.0", scripts: { start: script } })
  )
}

describe("prefork through npm: SIGTERM to the outermost pid (real processes)", () => {
  it.live.each([
    { form: "npm start", command: "npm", args: (_: string) => ["start"] },
    {
      form: "npx prefork",
      command: "npx",
      args: (workers: string) => ["prefork", "-n", "2", "--", "node", fixture("signal-log.js"), workers]
    },
    {
      form: "npm exec prefork",
      command: "npm",
      args: (workers: string) => ["exec", "--", "prefork", "-n", "2", "--", "node", fixture("signal-log.js"), workers]
    }
  ])("$form: every worker gets one SIGTERM and stops, nothing is left", ({ args, command }) =>
    Effect.scoped(
      Effect.gen(function* () {
        const dir = yield* tempDir
        const workers = Path.join(dir, "workers")
        mkdirSync(workers)
        npmPackage(dir, workers)
        const { env: tagEnv, tag } = makeTag()
        const npm = yield* start(command, args(workers), dir, userEnv(tagEnv, dir))
        yield* ready(workers, 2)
        npm.child.kill("SIGTERM")
        // npm and the shell end at once; prefork stops its workers, then exits.
        yield* assertNoneLeft(tag, "20 seconds")
        const signals = readFileSync(Path.join(workers, "signals"), "utf8").trim().split("\n").sort()
        assert.deepStrictEqual(
          signals.map((line) => line.split(" ").slice(0, 2).join(" ")),
          ["SIGTERM 0", "SIGTERM 1"],
          npm.output()
        )
        assert.include(npm.output(), "went away without passing on its signal: stopping as on SIGTERM")
      })
    )
  )

  // Ctrl-C: the terminal's SIGINT reaches every process of the foreground group (npm, the shell, prefork).
  it.live.each([
    { form: "npm start", shell: "/bin/sh", status: { code: null, signal: "SIGINT" } },
    { form: "npx prefork", shell: "/bin/sh", status: { code: null, signal: "SIGINT" } },
    { form: "npm start", shell: "/bin/bash", status: { code: 0, signal: null } },
    { form: "npx prefork", shell: "/bin/bash", status: { code: 0, signal: null } }
  ] as const)(
    "Ctrl-C of $form (script shell $shell): every worker gets one SIGTERM, prefork exits 0, npm ends with $status",
    ({ form, shell, status }) =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const workers = Path.join(dir, "workers")
          mkdirSync(workers)
          npmPackage(dir, workers)
          const { env: tagEnv, tag } = makeTag()
          const args =
            form === "npm start" ? ["start"] : ["prefork", "-n", "2", "--", "node", fixture("signal-log.js"), workers]
          const npm = yield* start(form === "npm start" ? "npm" : "npx", args, dir, {
            ...userEnv(tagEnv, dir),
            npm_config_script_shell: shell
          })
          yield* ready(workers, 2)
          // As a terminal's Ctrl-C: SIGINT to the group npm leads.
          process.kill(-npm.child.pid!, "SIGINT")
          yield* assertNoneLeft(tag, "20 seconds")
          const ended = yield* eventually(() =>
            npm.child.exitCode === null && npm.child.signalCode === null
              ? undefined
              : { code: npm.child.exitCode, signal: npm.child.signalCode }
          )
          const signals = readFileSync(Path.join(workers, "signals"), "utf8").trim().split("\n").sort()
          assert.deepStrictEqual(
            signals.map((line) => line.split(" ").slice(0, 2).join(" ")),
            ["SIGTERM 0", "SIGTERM 1"],
            npm.output()
          )
          // One stop: bash execs prefork, so npm's copy of the SIGINT reaches it too, and is not a second Ctrl-C.
          assert.strictEqual(npm.output().split("SIGINT received").length, 2, npm.output())
          // dash dies of the SIGINT it got once prefork (exit 0) is done, and npm then kills itself with it: a shell shows 130.
          assert.deepStrictEqual(ended, status, npm.output())
        })
      )
  )

  it.live(
    "a prefork started directly keeps running when its parent exits (a daemon), and stops on its own SIGTERM",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const { env: tagEnv, tag } = makeTag()
          const log = Path.join(dir, "log")
          // The shell starts prefork in the background and exits at once: prefork is adopted by init (or a subreaper).
          const shell = yield* start(
            "sh",
            ["-c", `node "$0" -n 1 -- node "$1" >"$2" 2>&1 & echo $!`, BIN, fixture("forever.js"), log],
            dir,
            userEnv(tagEnv, dir)
          )
          const pid = yield* eventually(() => {
            const n = Number.parseInt(shell.output(), 10)
            return Number.isNaN(n) || shell.child.exitCode === null ? undefined : n
          })
          // prefork and its worker.
          yield* eventually(() => (pidsWithTag(tag).length === 2 ? true : undefined), "20 seconds")
          // Three times the interval at which an npm-started prefork looks at its parent.
          yield* Effect.sleep("3 seconds")
          assert.include(pidsWithTag(tag), pid, readFileSync(log, "utf8"))
          assert.notInclude(readFileSync(log, "utf8"), "went away")
          process.kill(pid, "SIGTERM")
          yield* assertNoneLeft(tag, "20 seconds")
        })
      )
  )
})
