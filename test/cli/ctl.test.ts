/**
 * `prefork ctl` against a running prefork, end to end: status (with CPU % and
 * RSS), restart, scale and reload; a second client while another is
 * connected; a stale socket file at start; the socket private to its user and
 * gone at exit; a client of another user refused before it connects.
 */
import { execFileSync, spawnSync } from "node:child_process"
import { chmodSync, existsSync, lstatSync, writeFileSync } from "node:fs"
import * as Net from "node:net"
import * as Path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { eventually, pidsWithTag } from "../helpers/procs.ts"
import { tempDir } from "../helpers/supervise.ts"
import { BIN, fixture, prefork, stderrHas } from "./prefork.ts"

/** Runs `prefork ctl …args` with this runtime directory: its exit code and output. */
const ctl = (runtimeDir: string, args: ReadonlyArray<string>, as?: number) => {
  const command = as === undefined ? process.execPath : "setpriv"
  const argv =
    as === undefined
      ? [BIN, "ctl", ...args]
      : [`--reuid=${as}`, `--regid=${as}`, "--clear-groups", "--", process.execPath, BIN, "ctl", ...args]
  const run = spawnSync(command, argv, {
    encoding: "utf8",
    env: {
      ...process.env,
      XDG_RUNTIME_DIR: runtimeDir,
      PATH: `${Path.dirname(process.execPath)}:${process.env["PATH"]}`
    },
    cwd: "/",
    timeout: 20_000
  })
  return { code: run.status, stdout: run.stdout, stderr: run.stderr }
}

/** The default socket of a prefork named `name`: by default named after its script (`node …/forever.js`). */
const socketPath = (runtimeDir: string, name = "forever") => Path.join(runtimeDir, "prefork", `${name}.sock`)

const nobody = (() => {
  try {
    return Number(execFileSync("id", ["-u", "nobody"], { encoding: "utf8" }).trim())
  } catch {
    return undefined
  }
})()

describe("prefork ctl (real processes)", () => {
  it.live(
    "status, restart, scale and reload from another process; a second client while one is connected; private and removed at exit",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const p = yield* prefork(["-n", "2", "--", "node", fixture("forever.js")])
          const path = socketPath(p.runtimeDir)
          // Private once listening (until then the 0700 directory keeps everyone else out).
          yield* eventually(() => (existsSync(path) && (lstatSync(path).mode & 0o777) === 0o600 ? true : undefined))
          assert.strictEqual(lstatSync(Path.dirname(path)).mode & 0o777, 0o700)
          const status = ctl(p.runtimeDir, ["status"])
          assert.strictEqual(status.code, 0, status.stderr)
          // From here on a first client stays connected, idle, all along. (Connected once prefork answered: the
          // socket's file exists a moment before it listens, and a connect then is refused.)
          const idle = Net.connect(path)
          idle.on("error", () => {})
          yield* Effect.addFinalizer(() => Effect.sync(() => idle.destroy()))
          yield* Effect.callback<void>((resume) => {
            idle.once("connect", () => resume(Effect.void))
          }).pipe(Effect.timeout("10 seconds"), Effect.orDie)
          const lines = status.stdout.trim().split("\n")
          assert.match(lines[0]!, /^TASK +PID +STATE +RESTARTS +UPTIME +CPU +RSS +LAST EXIT$/)
          assert.strictEqual(lines.length, 3)
          assert.match(lines[1]!, /^0 +\d+ +running +0 +\S+ +\d+\.\d % +\d+\.\d MiB +-$/)
          const pidOf = (line: string) => Number(line.split(/\s+/)[1])
          const before = pidOf(lines[2]!)
          assert.deepStrictEqual(ctl(p.runtimeDir, ["restart", "1"]).code, 0)
          const restarted = ctl(p.runtimeDir, ["status"]).stdout.trim().split("\n")
          assert.notStrictEqual(pidOf(restarted[2]!), before)
          assert.strictEqual(ctl(p.runtimeDir, ["scale", "3"]).stdout.trim(), "3 workers")
          assert.strictEqual(ctl(p.runtimeDir, ["reload"]).code, 0)
          assert.strictEqual(ctl(p.runtimeDir, ["status"]).stdout.trim().split("\n").length, 4)
          // Errors are prefork's answers, and bad usage is the client's.
          const missing = ctl(p.runtimeDir, ["restart", "7"])
          assert.deepStrictEqual([missing.code, missing.stderr.trim()], [1, "prefork ctl: no worker with task id 7"])
          assert.strictEqual(ctl(p.runtimeDir, ["frobnicate"]).code, 2)
          p.signal("SIGTERM")
          assert.strictEqual((yield* p.exit).code, 0, p.stderr())
          assert.deepStrictEqual(pidsWithTag(p.tag), [])
          assert.isFalse(existsSync(path))
          assert.strictEqual(ctl(p.runtimeDir, ["status"]).code, 3)
        })
      )
  )

  it.live("ctl reload, ctl restart and SIGHUP each log a start and a finish line; a failed reload says how", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const gate = Path.join(yield* tempDir, "gate")
        // Ready 300 ms after it starts; once the gate exists, a new worker exits at once (a reload fails).
        const p = yield* prefork([
          "-n",
          "2",
          "--ready",
          "300ms",
          "--",
          "sh",
          "-c",
          `[ -e ${gate} ] && exit 1; exec sleep 1000`
        ])
        yield* eventually(() => (existsSync(socketPath(p.runtimeDir, "sh")) ? true : undefined))
        /** Waits until stderr has a line matching each pattern, in order (ctl is synchronous: prefork's lines are read meanwhile). */
        const inOrder = (...lines: ReadonlyArray<string>) =>
          stderrHas(p, new RegExp(lines.map((line) => `${line}$`).join("[\\s\\S]*"), "m"))
        assert.strictEqual(ctl(p.runtimeDir, ["reload"]).code, 0)
        yield* inOrder(
          "INFO prefork ctl reload: reloading 2 processes one at a time",
          "INFO Reload finished: 2 processes replaced in \\d.*"
        )
        assert.strictEqual(ctl(p.runtimeDir, ["restart", "1"]).code, 0)
        yield* inOrder(
          "INFO prefork ctl restart 1: restarting child 1 \\(pid \\d+\\)",
          "INFO Restart of child 1 finished in \\d.*: pid \\d+"
        )
        p.signal("SIGHUP")
        yield* inOrder(
          "INFO SIGHUP received: reloading 2 processes one at a time",
          "INFO Reload finished: 2 processes replaced in \\d.*"
        )
        writeFileSync(gate, "")
        const failed = ctl(p.runtimeDir, ["reload"])
        assert.strictEqual(failed.code, 1, failed.stderr)
        yield* inOrder(
          "INFO prefork ctl reload: reloading 2 processes one at a time",
          "WARN Reload stopped after \\d.*: .*child 0.* \\(0 of 2 processes replaced; the others keep their workers\\)"
        )
        p.signal("SIGTERM")
        assert.strictEqual((yield* p.exit).code, 0, p.stderr())
      })
    )
  )

  it.live("a stale socket file at start is replaced; a live one at an explicit --control is a usage error", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const first = yield* prefork(["-n", "1", "--", "node", fixture("forever.js")])
        const path = socketPath(first.runtimeDir)
        yield* eventually(() => (existsSync(path) ? true : undefined))
        // Another prefork pointed at a socket a live prefork answers on.
        const second = yield* prefork(["--control", path, "-n", "1", "--", "node", fixture("forever.js")])
        assert.strictEqual((yield* second.exit).code, 2, second.stderr())
        assert.include(second.stderr(), `another prefork answers on ${path}`)
        // Killed without a chance to clean up, the first leaves its socket file: stale.
        first.child.kill("SIGKILL")
        yield* first.exit
        yield* eventually(() => (pidsWithTag(first.tag).length === 0 ? true : undefined))
        assert.isTrue(existsSync(path))
        const third = yield* prefork(["--control", path, "-n", "1", "--", "node", fixture("forever.js")])
        yield* stderrHas(third, "Starting 1 process")
        yield* eventually(() => (ctl(first.runtimeDir, ["status"]).code === 0 ? true : undefined), "10 seconds")
        // --control names the socket for the client too.
        assert.strictEqual(ctl("/nonexistent", ["--control", path, "status"]).code, 0)
        assert.strictEqual(ctl("/nonexistent", [`--control=${path}`, "status"]).code, 0)
        assert.strictEqual(ctl("/nonexistent", ["status"]).code, 3)
        third.signal("SIGTERM")
        assert.strictEqual((yield* third.exit).code, 0, third.stderr())
      })
    )
  )

  it.live.skipIf(process.getuid?.() !== 0 || nobody === undefined)(
    "a client of another user is refused before it connects: neither the directory nor the socket is its own (exit 4)",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const p = yield* prefork(["-n", "1", "--", "node", fixture("forever.js")])
          const path = socketPath(p.runtimeDir)
          yield* eventually(() => (existsSync(path) && (lstatSync(path).mode & 0o777) === 0o600 ? true : undefined))
          // Let the other user reach the directory, so that only the socket's own mode stops it.
          chmodSync(p.runtimeDir, 0o755)
          chmodSync(Path.dirname(path), 0o755)
          const denied = ctl(p.runtimeDir, ["status"], nobody)
          assert.strictEqual(denied.code, 4, denied.stderr)
          assert.include(denied.stderr, `refusing ${Path.dirname(path)}: it belongs to uid 0, not to uid ${nobody}`)
          const explicit = ctl("/nonexistent", ["--control", path, "status"], nobody)
          assert.strictEqual(explicit.code, 4, explicit.stderr)
          assert.include(explicit.stderr, `refusing ${path}: the socket belongs to uid 0, not to uid ${nobody}`)
          p.signal("SIGTERM")
          assert.strictEqual((yield* p.exit).code, 0)
        })
      )
  )
})
