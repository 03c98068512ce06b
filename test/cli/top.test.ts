/**
 * `prefork ctl top` against a real prefork of two workers: `--count 2` prints
 * two frames, appended (stdout is not a terminal), each with both workers'
 * pids, and exits 0; without `--count`, Ctrl-C (SIGINT) ends it with exit 0.
 */
import { spawn } from "node:child_process"
import { existsSync } from "node:fs"
import * as Path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect } from "effect"
import { eventually } from "../helpers/procs.ts"
import { ctl, workspace } from "./named.ts"
import { BIN, prefork } from "./prefork.ts"

describe("prefork ctl top (real processes)", () => {
  it.live("--count 2: two frames with both workers' pids; Ctrl-C ends it with exit 0", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const ws = yield* workspace
        const p = yield* prefork(["-n", "2", "--", "node", "server.js"], {
          cwd: ws.cwd,
          env: { XDG_RUNTIME_DIR: ws.runtimeDir }
        })
        yield* eventually(() => existsSync(Path.join(ws.sockets, "server.sock")) || undefined, "20 seconds")
        // Both workers running, and their pids, as status says.
        const pids = yield* Effect.repeat(ctl(ws.runtimeDir, ["status"]), {
          until: (r) => r.stdout.split("\n").filter((l) => / running /.test(l)).length === 2,
          times: 100
        }).pipe(
          Effect.map((r) =>
            r.stdout
              .trim()
              .split("\n")
              .slice(1)
              .map((l) => l.split(/\s+/)[1]!)
          )
        )
        assert.strictEqual(pids.length, 2)
        const top = yield* ctl(ws.runtimeDir, ["top", "--count", "2", "--interval", "200ms"])
        assert.strictEqual(top.code, 0, top.stderr)
        const frames = top.stdout.split(/\n(?=server: )/)
        assert.strictEqual(frames.length, 2, top.stdout)
        for (const frame of frames) {
          assert.match(frame, /^server: 2\/2 running, /)
          assert.match(frame.split("\n")[1]!, /^TASK +PID +STATE +RESTARTS +UPTIME +CPU +RSS +LAST EXIT$/)
          for (const pid of pids) assert.match(frame, new RegExp(`^\\d+ +${pid} +running `, "m"))
        }
        // No ANSI codes when stdout is not a terminal.
        assert.notInclude(top.stdout, "\x1b[")
        // Unbounded, until Ctrl-C.
        const ended = yield* Deferred.make<number | null>()
        let out = ""
        const live = spawn(process.execPath, [BIN, "ctl", "-n", "server", "top", "--interval", "200ms"], {
          env: { ...process.env, XDG_RUNTIME_DIR: ws.runtimeDir },
          stdio: ["ignore", "pipe", "pipe"]
        })
        yield* Effect.addFinalizer(() => Effect.sync(() => live.kill("SIGKILL")))
        live.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()))
        live.on("close", (code) => Deferred.doneUnsafe(ended, Effect.succeed(code)))
        yield* eventually(() => (out.split("server: ").length > 2 ? true : undefined), "20 seconds")
        live.kill("SIGINT")
        assert.strictEqual(yield* Deferred.await(ended).pipe(Effect.timeout("10 seconds")), 0)
        p.signal("SIGTERM")
        assert.strictEqual((yield* p.exit).code, 0, p.stderr())
      })
    )
  )
})
