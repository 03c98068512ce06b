/**
 * What the install test does as a user at a shell would: run a command with a
 * clean environment (no npm or vitest variables, no project's
 * `node_modules/.bin` on the PATH, the chosen Node first), within a time
 * budget, and look at what npm put in `node_modules`.
 */
import { spawn } from "node:child_process"
import { accessSync, constants, existsSync, lstatSync, readdirSync, readFileSync, realpathSync } from "node:fs"
import * as Path from "node:path"
import { Duration, Effect } from "effect"

/** A command's outcome: its exit code (null when it died of a signal or ran out of time) and output. */
export interface Ran {
  readonly command: string
  readonly code: number | null
  readonly timedOut: boolean
  readonly stdout: string
  readonly stderr: string
}

/** At most this much output is kept from one command (npm's is a few KiB). */
const MAX_OUTPUT = 4 * 1024 * 1024

/**
 * The environment of a user's shell whose `node` is the one in `nodeDir`:
 * the test's own, without npm's and vitest's variables and without any
 * `node_modules/.bin` on the PATH, plus `extra`.
 */
export const userEnv = (nodeDir: string, extra: Record<string, string> = {}): Record<string, string> => {
  const env: Record<string, string> = {}
  for (const [key, value] of Object.entries(process.env)) {
    if (value === undefined || /^(npm_|vitest|node_options$|node_env$)/i.test(key)) continue
    env[key] = value
  }
  const path = (process.env["PATH"] ?? "")
    .split(Path.delimiter)
    .filter((dir) => dir.length > 0 && !dir.includes(`node_modules${Path.sep}.bin`) && !dir.includes("node-gyp-bin"))
  return { ...env, PATH: [nodeDir, ...path].join(Path.delimiter), ...extra }
}

/** The real file behind the first executable `name` on the PATH of `env`, or undefined. */
export const which = (name: string, env: Record<string, string>): string | undefined => {
  for (const dir of (env["PATH"] ?? "").split(Path.delimiter)) {
    const candidate = Path.join(dir, name)
    try {
      accessSync(candidate, constants.X_OK)
      return realpathSync(candidate)
    } catch {
      // not here
    }
  }
  return undefined
}

/**
 * Runs `command args` in its own process group, collecting its output; at the
 * end of `budget` the group is SIGKILLed (by the pid of its leader, which this
 * started) and the outcome says `timedOut`. Interrupting the effect kills it too.
 */
export const run = (
  command: string,
  args: ReadonlyArray<string>,
  options: { readonly cwd: string; readonly env: Record<string, string>; readonly budget: Duration.Input }
): Effect.Effect<Ran> =>
  Effect.callback<Ran>((resume) => {
    const shown = [command, ...args].join(" ")
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env,
      stdio: ["ignore", "pipe", "pipe"],
      detached: true
    })
    const out: Array<Buffer> = []
    const err: Array<Buffer> = []
    let kept = 0
    const keep = (into: Array<Buffer>) => (chunk: Buffer) => {
      if (kept >= MAX_OUTPUT) return
      kept += chunk.length
      into.push(chunk)
    }
    child.stdout!.on("data", keep(out))
    child.stderr!.on("data", keep(err))
    const killGroup = () => {
      try {
        process.kill(-child.pid!, "SIGKILL")
      } catch {
        // already gone
      }
    }
    let timedOut = false
    const timer = setTimeout(
      () => {
        timedOut = true
        killGroup()
      },
      Duration.toMillis(Duration.fromInputUnsafe(options.budget))
    )
    child.on("error", (error) => {
      clearTimeout(timer)
      resume(Effect.die(new Error(`${shown}: ${error.message}`)))
    })
    child.on("close", (code) => {
      clearTimeout(timer)
      resume(
        Effect.succeed({
          command: shown,
          code,
          timedOut,
          stdout: Buffer.concat(out).toString("utf8"),
          stderr: Buffer.concat(err).toString("utf8")
        })
      )
    })
    return Effect.sync(() => {
      clearTimeout(timer)
      killGroup()
    })
  })

/** What a failed command said, for an assertion's message. */
export const explain = (ran: Ran): string =>
  `${ran.command}: ${ran.timedOut ? "ran out of time" : `exit ${ran.code}`}\n${ran.stdout}\n${ran.stderr}`

/** Runs a command that must succeed; a failure (or running out of time) is a defect naming it, with its output. */
export const ok = (
  command: string,
  args: ReadonlyArray<string>,
  options: { readonly cwd: string; readonly env: Record<string, string>; readonly budget: Duration.Input }
): Effect.Effect<Ran> =>
  Effect.flatMap(run(command, args, options), (ran) =>
    ran.code === 0 ? Effect.succeed(ran) : Effect.die(new Error(explain(ran)))
  )

/** A package npm installed: its name and version, and where it is. */
export interface Installed {
  readonly name: string
  readonly version: string
  readonly dir: string
}

/**
 * Every package under `nodeModules`, nested copies included (a symlinked
 * package is followed, so a path install's own `node_modules` counts too);
 * bounded in depth.
 */
export const installedPackages = (nodeModules: string, depth = 0): Array<Installed> => {
  if (depth > 8 || !existsSync(nodeModules)) return []
  const found: Array<Installed> = []
  for (const entry of readdirSync(nodeModules)) {
    if (entry.startsWith(".")) continue
    const dir = Path.join(nodeModules, entry)
    if (entry.startsWith("@") && lstatSync(dir).isDirectory()) {
      found.push(...installedPackages(dir, depth))
      continue
    }
    const manifest = Path.join(dir, "package.json")
    if (!existsSync(manifest)) continue
    const { name, version } = JSON.parse(readFileSync(manifest, "utf8")) as { name: string; version: string }
    found.push({ name, version, dir }, ...installedPackages(Path.join(dir, "node_modules"), depth + 1))
  }
  return found
}
