/**
 * Helpers for tests of named preforks: `prefork ctl` run without blocking the
 * test, and a private runtime directory with an app directory holding
 * `server.js` (fixtures/forever.js), so that `node server.js` is named
 * `server`.
 */
import { spawn } from "node:child_process"
import { copyFileSync, mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import * as Path from "node:path"
import { Effect } from "effect"
import { BIN, fixture } from "./prefork.ts"

export interface Run {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** Runs `argv` to its end without blocking the test's event loop, its output collected (killed after 30 s). */
export const runToEnd = (
  argv: ReadonlyArray<string>,
  options: { readonly cwd: string; readonly env: NodeJS.ProcessEnv }
) =>
  Effect.callback<Run>((resume) => {
    const child = spawn(argv[0]!, argv.slice(1), { ...options, stdio: ["ignore", "pipe", "pipe"] })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
    const guard = setTimeout(() => child.kill("SIGKILL"), 30_000)
    child.on("close", (code) => {
      clearTimeout(guard)
      resume(Effect.succeed({ code, stdout, stderr }))
    })
  })

/** `prefork ctl …args` with this XDG_RUNTIME_DIR, run to its end without blocking the test (killed after 30 s). */
export const ctl = (runtimeDir: string, args: ReadonlyArray<string>) =>
  runToEnd([process.execPath, BIN, "ctl", ...args], {
    cwd: "/",
    env: { ...process.env, XDG_RUNTIME_DIR: runtimeDir, PREFORK_CONTROL: undefined }
  })

/** A private runtime directory (0700) and a working directory holding `server.js`, removed at the end. */
export const workspace = Effect.acquireRelease(
  Effect.sync(() => {
    // mkdtemp makes it 0700: private, as XDG_RUNTIME_DIR is.
    const runtimeDir = mkdtempSync(Path.join(tmpdir(), "prefork-names-"))
    const app = mkdtempSync(Path.join(runtimeDir, "app-"))
    copyFileSync(fixture("forever.js"), Path.join(app, "server.js"))
    return { runtimeDir, cwd: app, sockets: Path.join(runtimeDir, "prefork") }
  }),
  ({ runtimeDir }) => Effect.sync(() => rmSync(runtimeDir, { recursive: true, force: true }))
)
