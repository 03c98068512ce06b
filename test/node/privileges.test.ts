/**
 * Dropping privileges: a supervisor started as root binds a privileged port
 * and runs its workers as an unprivileged user; one that is not root gets a
 * clear `InvalidOptions`. (Skipped when the tests do not run as root.)
 *
 * All or nothing (issue 16): a worker's uid, gid and supplementary groups,
 * read from `/proc/<pid>/status` of real workers of a supervisor that has
 * supplementary groups itself (set by `setpriv --groups`), in every mode and
 * through every wrapper (`setpriv --pdeathsig`, the `sh -c` that sets
 * `LISTEN_PID`, cluster's `setsid`): a user brings its primary group, the
 * supplementary groups are always cleared, a uid without a passwd entry
 * needs a group (never root's gid 0 by default).
 */
import { execFileSync } from "node:child_process"
import { readFileSync } from "node:fs"
import * as Net from "node:net"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import * as Listen from "../../src/Listen.ts"
import * as Supervisor from "../../src/Supervisor.ts"
import { answered, getJson } from "../helpers/http.ts"
import { awaitExit, spawnPrimary, waitStarted } from "../helpers/primary.ts"
import { assertNoneLeft, makeTag, pidsWithTag } from "../helpers/procs.ts"
import { fixture, supervise } from "../helpers/supervise.ts"
import { BIN, prefork } from "../cli/prefork.ts"

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

/** The real, effective, saved and file-system uids and gids, and the supplementary groups, of a process. */
const identity = (pid: number) => {
  const lines = readFileSync(`/proc/${pid}/status`, "utf8").split("\n")
  const field = (name: string) =>
    lines
      .find((l) => l.startsWith(`${name}:`))!
      .slice(name.length + 1)
      .trim()
      .split(/\s+/)
      .filter((w) => w.length > 0)
      .map(Number)
  return { uid: field("Uid"), gid: field("Gid"), groups: field("Groups") }
}

/** A uid and a gid that no passwd or group entry names here. */
const unnamed = (() => {
  for (let id = 2000; id < 2100; id++) {
    try {
      execFileSync("getent", ["passwd", String(id)], { stdio: "ignore" })
    } catch {
      try {
        execFileSync("getent", ["group", String(id)], { stdio: "ignore" })
      } catch {
        return id
      }
    }
  }
  return undefined
})()

/** What a supervisor with supplementary groups 4 and 24 is started with. */
const withGroups = ["setpriv", "--groups=4,24", "--"]

const workerModes = [
  { name: "module (setpriv --pdeathsig)", options: { mode: "module", command: fixture("forever.js") } },
  {
    name: "command (setpriv --pdeathsig)",
    options: { mode: "command", command: process.execPath, args: [fixture("forever.js")] }
  },
  {
    name: "command with a socket (the sh -c that sets LISTEN_PID)",
    options: { mode: "command", command: process.execPath, args: [fixture("forever.js")], listen: ["127.0.0.1:0"] }
  },
  { name: "cluster (setsid)", options: { mode: "cluster", command: fixture("forever.js") } },
  {
    name: "cluster without a watchdog (setsid, setpriv --pdeathsig)",
    options: { mode: "cluster", command: fixture("forever.js") },
    spawner: { watchdog: false }
  }
] as const

describe.skipIf(!root || nobody === undefined || unnamed === undefined)(
  "privileges dropped all or nothing: /proc/<pid>/status of real workers (as root)",
  () => {
    const nogroup = Number(execFileSync("id", ["-g", "nobody"], { encoding: "utf8" }).trim())

    /**
     * Runs a primary with supplementary groups 4 and 24 and `options`, and
     * returns its own identity (the baseline) and that of each of its 2 workers.
     */
    const workersOf = (options: object, spawner: object = {}) =>
      Effect.scoped(
        Effect.gen(function* () {
          const primary = yield* spawnPrimary(
            "primary.ts",
            [JSON.stringify({ processes: 2, stdio: "ignore", ready: "spawn", ...options })],
            { prefix: withGroups, env: { PREFORK_TEST_SPAWNER: JSON.stringify(spawner) } }
          )
          const started = yield* waitStarted(primary, 2, "20 seconds")
          const self = identity(primary.pid)
          const workers = started.map((e) => identity(e.pid!))
          process.kill(primary.pid, "SIGTERM")
          const exit = yield* awaitExit(primary, "20 seconds")
          assert.strictEqual(exit.code, 0, primary.lines.join("\n"))
          yield* assertNoneLeft(primary.tag)
          return { self, workers }
        })
      )

    for (const { name, options, ...rest } of workerModes) {
      const spawner = "spawner" in rest ? rest.spawner : {}
      it.live(`${name}: user nobody runs as nobody:nogroup with no supplementary group`, () =>
        Effect.gen(function* () {
          const { self, workers } = yield* workersOf({ ...options, user: "nobody" }, spawner)
          // The baseline: the supervisor itself is root, with groups 4 and 24.
          assert.deepStrictEqual(self, { uid: [0, 0, 0, 0], gid: [0, 0, 0, 0], groups: [4, 24] })
          for (const worker of workers) {
            assert.deepStrictEqual(worker, {
              uid: [nobody!, nobody!, nobody!, nobody!],
              gid: [nogroup, nogroup, nogroup, nogroup],
              groups: []
            })
          }
        })
      )
    }

    for (const { name, options } of [workerModes[1], workerModes[2], workerModes[3]]) {
      it.live(`${name}: a uid and a gid without entries; a group alone clears the supplementary groups`, () =>
        Effect.gen(function* () {
          const both = yield* workersOf({ ...options, user: unnamed, group: String(unnamed) })
          for (const worker of both.workers) {
            assert.deepStrictEqual(worker, {
              uid: [unnamed!, unnamed!, unnamed!, unnamed!],
              gid: [unnamed!, unnamed!, unnamed!, unnamed!],
              groups: []
            })
          }
          // As root, a group without a user is still a change of group: no supplementary group is kept.
          const group = yield* workersOf({ ...options, group: "nogroup" })
          assert.deepStrictEqual(group.self.groups, [4, 24])
          for (const worker of group.workers) {
            assert.deepStrictEqual(worker, {
              uid: [0, 0, 0, 0],
              gid: [nogroup, nogroup, nogroup, nogroup],
              groups: []
            })
          }
        })
      )
    }

    it.effect("a uid without a passwd entry and no group is refused (its workers would keep gid 0)", () =>
      Effect.gen(function* () {
        for (const user of [unnamed!, String(unnamed)]) {
          const exit = yield* Effect.exit(Supervisor.config({ command: "x", user }))
          assert.isTrue(Exit.isFailure(exit))
          const error = Exit.isFailure(exit) ? exit.cause.reasons.find((r) => r._tag === "Fail")?.error : undefined
          assert.strictEqual(error?._tag, "InvalidOptions")
          if (error?._tag !== "InvalidOptions") return
          assert.strictEqual(error.field, "user")
          assert.include(error.message, `user ${unnamed} has no passwd entry, so no primary group: give a group too`)
        }
        // With a group, or as a user that has an entry (its primary group), it is accepted.
        const given = yield* Supervisor.config({ command: "x", user: unnamed!, group: 0 })
        assert.deepStrictEqual([given.uid, given.gid], [unnamed, 0])
        const named = yield* Supervisor.config({ command: "x", user: String(nobody) })
        assert.deepStrictEqual([named.uid, named.gid], [nobody, nogroup])
      })
    )

    it.live(
      "prefork --user <uid without entry> is a usage error; with --group, or --user nobody, no group is kept",
      () =>
        Effect.scoped(
          Effect.gen(function* () {
            const refused = yield* prefork(["--user", String(unnamed), "--", "true"])
            assert.strictEqual((yield* refused.exit).code, 2)
            assert.include(refused.stderr(), `user ${unnamed} has no passwd entry`)
            assert.include(refused.stderr(), "--group")
            // prefork itself with supplementary groups 4 and 24; each worker prints its own /proc status lines.
            const show = 'grep -E "^(Uid|Gid|Groups):" /proc/$$/status'
            const run = (args: ReadonlyArray<string>) => {
              const { env, tag } = makeTag()
              const out = execFileSync(
                withGroups[0]!,
                [
                  ...withGroups.slice(1),
                  process.execPath,
                  BIN,
                  ...args,
                  "-n",
                  "1",
                  "--restart",
                  "never",
                  "--",
                  "sh",
                  "-c",
                  show
                ],
                { encoding: "utf8", env: { ...process.env, ...env }, timeout: 20_000 }
              )
              assert.deepStrictEqual(pidsWithTag(tag), [])
              return out
                .trim()
                .split("\n")
                .map((l) =>
                  l
                    .replace(/^\[0:\d+\] /, "")
                    .replace(/\s+/g, " ")
                    .trim()
                )
            }
            assert.deepStrictEqual(run(["--user", String(unnamed), "--group", String(unnamed)]), [
              `Uid: ${unnamed} ${unnamed} ${unnamed} ${unnamed}`,
              `Gid: ${unnamed} ${unnamed} ${unnamed} ${unnamed}`,
              "Groups:"
            ])
            assert.deepStrictEqual(run(["--user", "nobody"]), [
              `Uid: ${nobody} ${nobody} ${nobody} ${nobody}`,
              `Gid: ${nogroup} ${nogroup} ${nogroup} ${nogroup}`,
              "Groups:"
            ])
          })
        )
    )
  }
)
