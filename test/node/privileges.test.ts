/**
 * Dropping privileges: a supervisor started as root binds a privileged port
 * and runs its workers as an unprivileged user; one that is not root gets a
 * clear `InvalidOptions`. (Skipped when the tests do not run as root.)
 */
import { execFileSync } from "node:child_process"
import { readFileSync } from "node:fs"
import * as Net from "node:net"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Listen from "../../src/Listen.ts"
import { answered, getJson } from "../helpers/http.ts"
import { pidsWithTag } from "../helpers/procs.ts"
import { fixture, supervise } from "../helpers/supervise.ts"
import { prefork } from "../cli/prefork.ts"

const root = process.getuid?.() === 0
const nobody = (() => {
  try {
    return Number(execFileSync("id", ["-u", "nobody"], { encoding: "utf8" }).trim())
  } catch {
    return undefined
  }
})()

/** A port below 1024 that nothing listens on here: 80 if it is free. */
const freePrivilegedPort = Effect.callback<number>((resume) => {
  const tryPort = (candidates: ReadonlyArray<number>) => {
    const [port, ...rest] = candidates
    if (port === undefined) return resume(Effect.die(new Error("no privileged port is free")))
    const server = Net.createServer()
    server.once("error", () => tryPort(rest))
    server.listen(port, "127.0.0.1", () => server.close(() => resume(Effect.succeed(port))))
  }
  tryPort([80, 81, 82, 8, 9])
})

/** The real, effective, saved and file-system uids of a process, from /proc. */
const uids = (pid: number): Array<number> =>
  readFileSync(`/proc/${pid}/status`, "utf8")
    .split("\n")
    .find((l) => l.startsWith("Uid:"))!
    .split(/\s+/)
    .slice(1, 5)
    .map(Number)

describe.skipIf(!root || nobody === undefined)("user and group (as root, real processes)", () => {
  it.live("a supervisor run as root binds a port below 1024 and serves it from workers running as nobody", () =>
    Effect.scoped(
      Effect.gen(function* () {
        // Port 80 when it is free here; otherwise another privileged one.
        const port = yield* freePrivilegedPort
        const { handle: supervisor, tag } = yield* supervise({
          mode: "module",
          command: fixture("fd-server.js"),
          processes: 2,
          listen: [`127.0.0.1:${port}`],
          ready: "message",
          user: "nobody"
        })
        yield* supervisor.awaitReady
        const address = supervisor.sockets[0]!.address as Extract<Listen.Address, { _tag: "Tcp" }>
        assert.isBelow(address.port, 1024)
        const served = answered(yield* getJson({ port: address.port }))
        assert.deepStrictEqual(uids(served.pid), [nobody, nobody, nobody, nobody])
        // The supervisor itself stays root.
        assert.strictEqual(process.getuid?.(), 0)
        yield* supervisor.stop
        assert.deepStrictEqual(pidsWithTag(tag), [])
      })
    )
  )

  it("a supervisor that is not root is told it needs root to run workers as another user", () => {
    const run = (options: object) =>
      JSON.parse(
        execFileSync(
          "setpriv",
          [
            `--reuid=${nobody}`,
            `--regid=${nobody}`,
            "--clear-groups",
            "--",
            process.execPath,
            fixture("config-as.ts"),
            JSON.stringify(options)
          ],
          { encoding: "utf8", cwd: "/" }
        )
      ) as { ok: boolean; field?: string; message?: string; uid?: number | undefined; gid?: number | undefined }
    const refused = run({ command: "x", user: "root" })
    assert.deepStrictEqual([refused.ok, refused.field], [false, "user"])
    assert.include(refused.message, "needs root")
    // Running workers as itself needs nothing.
    assert.deepStrictEqual(run({ command: "x", user: "nobody" }), { ok: true, uid: nobody, gid: nobody })
    const unknown = JSON.parse(
      execFileSync(
        process.execPath,
        [fixture("config-as.ts"), JSON.stringify({ command: "x", user: "no-such-user-here" })],
        { encoding: "utf8" }
      )
    ) as { field: string; message: string }
    assert.deepStrictEqual([unknown.field, unknown.message], ["user", "no such user: no-such-user-here"])
  })

  it.live("prefork --user nobody runs its workers as nobody; an unknown user is a usage error (exit 2)", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const ok = yield* prefork([
          "--user",
          "nobody",
          "-n",
          "1",
          "--restart",
          "never",
          "--",
          "sh",
          "-c",
          "id -u; id -g"
        ])
        assert.strictEqual((yield* ok.exit).code, 0, ok.stderr())
        assert.deepStrictEqual(
          ok
            .stdout()
            .trim()
            .split("\n")
            .map((l) => l.replace(/^\[0:\d+\] /, "")),
          [String(nobody), String(nobody)]
        )
        const unknown = yield* prefork(["--user", "no-such-user-here", "--", "true"])
        assert.strictEqual((yield* unknown.exit).code, 2)
        assert.include(unknown.stderr(), "no such user: no-such-user-here")
      })
    )
  )
})
