/**
 * Named preforks, end to end (real processes, each test with a private
 * runtime directory shared by its preforks):
 *
 * - two preforks started at once with no flags in one directory (`node
 *   server.js` twice) are `server` and `server-2`, each with its socket;
 *   `ctl ls` lists both with their pids; `-n` drives one alone; without `-n`
 *   `ctl` exits 2 naming both; `ctl -n server stop` stops that one (exit 0,
 *   its workers gone, prefork's own exit 0) and the other runs on;
 * - an explicit `--name` a running prefork holds is a usage error naming its
 *   pid, and no worker starts;
 * - a SIGKILLed prefork's socket is stale: `ls` shows it as such and the name
 *   is taken again; a socket that accepts and never answers does not hang
 *   `ls`; a symbolic link and a file planted in the directory are skipped,
 *   said, and left alone.
 */
import { existsSync, lstatSync, readFileSync, readlinkSync, symlinkSync, writeFileSync } from "node:fs"
import * as Net from "node:net"
import * as Path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { eventually, pidsWithTag } from "../helpers/procs.ts"
import { ctl, workspace } from "./named.ts"
import { prefork, stderrHas } from "./prefork.ts"

/** `ctl ls --json`, parsed. */
const lsJson = (runtimeDir: string) =>
  Effect.map(ctl(runtimeDir, ["ls", "--json"]), (run) => {
    assert.strictEqual(run.code, 0, run.stderr)
    return JSON.parse(run.stdout) as Array<{
      name: string
      state: string
      pid: number | null
      processes: number | null
    }>
  })

describe("named preforks (real processes)", () => {
  it.live(
    "two with no flags are server and server-2: ls lists both, -n drives one, no -n is ambiguous, ctl stop stops one",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const ws = yield* workspace
          const env = { XDG_RUNTIME_DIR: ws.runtimeDir }
          // Started together: they race for the default name, and must not both take it.
          const a = yield* prefork(["-n", "1", "--", "node", "server.js"], { cwd: ws.cwd, env })
          const b = yield* prefork(["-n", "1", "--", "node", "server.js"], { cwd: ws.cwd, env })
          yield* eventually(
            () => ["server.sock", "server-2.sock"].every((s) => existsSync(Path.join(ws.sockets, s))) || undefined,
            "20 seconds"
          )
          const listed = yield* lsJson(ws.runtimeDir)
          assert.deepStrictEqual(
            listed.map((r) => [r.name, r.state]),
            [
              ["server", "running"],
              ["server-2", "running"]
            ]
          )
          assert.sameMembers(
            listed.map((r) => r.pid),
            [a.pid, b.pid]
          )
          const pidOf = (name: string) => listed.find((r) => r.name === name)!.pid!
          const [first, second] = pidOf("server") === a.pid ? [a, b] : [b, a]
          yield* stderrHas(second, `The name server (prefork pid ${first.pid}) is taken: this prefork is server-2`)
          // The table: one row each, with pid, workers ready/wanted and the command.
          const table = yield* ctl(ws.runtimeDir, ["ls"])
          assert.strictEqual(table.code, 0, table.stderr)
          const rows = table.stdout.trim().split("\n")
          assert.match(rows[0]!, /^NAME +PID +WORKERS +UPTIME +COMMAND$/)
          assert.match(rows[1]!, new RegExp(`^server +${first.pid} +\\d/1 +\\S+ +node server\\.js$`))
          assert.match(rows[2]!, new RegExp(`^server-2 +${second.pid} +\\d/1 +\\S+ +node server\\.js$`))
          // -n drives that one alone.
          const scaled = yield* ctl(ws.runtimeDir, ["-n", "server-2", "scale", "3"])
          assert.deepStrictEqual([scaled.code, scaled.stdout], [0, "3 workers\n"], scaled.stderr)
          const workers = (name: string) =>
            Effect.map(ctl(ws.runtimeDir, ["--name", name, "status"]), (r) => r.stdout.trim().split("\n").length - 1)
          assert.deepStrictEqual([yield* workers("server"), yield* workers("server-2")], [1, 3])
          // Without -n, with two running: a usage error naming both.
          const ambiguous = yield* ctl(ws.runtimeDir, ["status"])
          assert.strictEqual(ambiguous.code, 2, ambiguous.stderr)
          assert.include(ambiguous.stderr, "several preforks run: server, server-2; choose one with -n <name>")
          assert.strictEqual((yield* ctl(ws.runtimeDir, ["-n", "nope", "status"])).code, 3)
          assert.strictEqual((yield* ctl(ws.runtimeDir, ["-n", "../x", "status"])).code, 2)
          // ctl stop: returns once that prefork has exited; its exit is SIGTERM's (0); its workers are gone.
          const stop = yield* ctl(ws.runtimeDir, ["-n", "server", "stop"])
          assert.deepStrictEqual([stop.code, stop.stdout], [0, `stopped (pid ${first.pid})\n`], stop.stderr)
          assert.isFalse(alive(first.pid), "ctl stop returned before prefork exited")
          assert.strictEqual((yield* first.exit).code, 0, first.stderr())
          assert.include(first.stderr(), "prefork ctl stop received: stopping as on SIGTERM")
          assert.deepStrictEqual(pidsWithTag(first.tag), [])
          assert.isFalse(existsSync(Path.join(ws.sockets, "server.sock")))
          // The other runs on, and is now the one ctl finds by itself.
          const alone = yield* ctl(ws.runtimeDir, ["status"])
          assert.strictEqual(alone.code, 0, alone.stderr)
          assert.strictEqual(alone.stdout.trim().split("\n").length, 4)
          second.signal("SIGTERM")
          assert.strictEqual((yield* second.exit).code, 0, second.stderr())
          const none = yield* ctl(ws.runtimeDir, ["status"])
          assert.strictEqual(none.code, 3, none.stderr)
        })
      ),
    90_000
  )

  it.live("an explicit --name a running prefork holds: exit 2 naming its pid, no worker started", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const ws = yield* workspace
        const env = { XDG_RUNTIME_DIR: ws.runtimeDir }
        const a = yield* prefork(["--name", "api", "-n", "1", "--", "node", "server.js"], { cwd: ws.cwd, env })
        yield* eventually(() => existsSync(Path.join(ws.sockets, "api.sock")) || undefined, "20 seconds")
        yield* stderrHas(a, "Starting 1 process")
        const b = yield* prefork(["--name", "api", "-n", "1", "--", "node", "server.js"], { cwd: ws.cwd, env })
        assert.strictEqual((yield* b.exit).code, 2, b.stderr())
        assert.include(b.stderr(), `--name: the name api is taken: prefork pid ${a.pid} answers on`)
        assert.notInclude(b.stderr(), "Starting")
        const bad = yield* prefork(["--name", "-x/y", "--", "node", "server.js"], { cwd: ws.cwd, env })
        assert.strictEqual((yield* bad.exit).code, 2, bad.stderr())
        assert.include(bad.stderr(), "--name")
        // The first is untouched.
        assert.deepStrictEqual(
          (yield* lsJson(ws.runtimeDir)).map((r) => [r.name, r.pid]),
          [["api", a.pid]]
        )
        a.signal("SIGTERM")
        assert.strictEqual((yield* a.exit).code, 0, a.stderr())
      })
    )
  )

  it.live(
    "a stale socket is shown and its name taken again; a hung socket does not hang ls; a link and a file are skipped and left alone",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const ws = yield* workspace
          const env = { XDG_RUNTIME_DIR: ws.runtimeDir }
          const killed = yield* prefork(["-n", "1", "--", "node", "server.js"], { cwd: ws.cwd, env })
          const stale = Path.join(ws.sockets, "server.sock")
          yield* eventually(() => existsSync(stale) || undefined, "20 seconds")
          killed.child.kill("SIGKILL")
          yield* killed.exit
          yield* eventually(() => (pidsWithTag(killed.tag).length === 0 ? true : undefined))
          assert.isTrue(lstatSync(stale).isSocket())
          // A socket of ours that accepts and never answers.
          const hung = Net.createServer(() => {})
          yield* Effect.acquireRelease(
            Effect.callback<void>(
              (resume) => void hung.listen(Path.join(ws.sockets, "x.sock"), () => resume(Effect.void))
            ),
            () => Effect.sync(() => hung.close())
          )
          symlinkSync("/etc/passwd", Path.join(ws.sockets, "evil.sock"))
          writeFileSync(Path.join(ws.sockets, "file.sock"), "precious")
          const ls = yield* ctl(ws.runtimeDir, ["ls", "--timeout", "1s"])
          assert.strictEqual(ls.code, 0, ls.stderr)
          const rows = ls.stdout.trim().split("\n")
          assert.deepStrictEqual(
            rows.slice(1).map((r) => r.split(/\s+/)[0]),
            ["server", "x"]
          )
          assert.match(rows[1]!, /\(stale\)$/)
          assert.match(rows[2]!, /\(no answer\)$/)
          assert.include(ls.stderr, "skipped evil.sock: it is a symbolic link, not a socket")
          assert.include(ls.stderr, "skipped file.sock: it is not a socket")
          // Nothing running: ctl has no prefork to pick.
          assert.strictEqual((yield* ctl(ws.runtimeDir, ["status", "--timeout", "1s"])).code, 3)
          // The stale name is taken again, with nothing said about it being taken.
          const again = yield* prefork(["-n", "1", "--", "node", "server.js"], { cwd: ws.cwd, env })
          yield* stderrHas(again, "Starting 1 process")
          const listed = yield* ctl(ws.runtimeDir, ["ls", "--json", "--timeout", "1s"])
          const found = JSON.parse(listed.stdout) as Array<{ name: string; state: string; pid: number | null }>
          assert.deepStrictEqual(
            found.map((r) => [r.name, r.state, r.pid]),
            [
              ["server", "running", again.pid],
              ["x", "no answer", null]
            ]
          )
          assert.notInclude(again.stderr(), "is taken")
          // What was planted is as it was.
          assert.strictEqual(readlinkSync(Path.join(ws.sockets, "evil.sock")), "/etc/passwd")
          assert.isTrue(lstatSync(Path.join(ws.sockets, "file.sock")).isFile())
          again.signal("SIGTERM")
          assert.strictEqual((yield* again.exit).code, 0, again.stderr())
        })
      ),
    60_000
  )
})

/** Whether `pid` runs: /proc has it, and not as a zombie. */
const alive = (pid: number) => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "latin1")
    return stat[stat.lastIndexOf(")") + 2] !== "Z"
  } catch {
    return false
  }
}
