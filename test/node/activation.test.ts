/**
 * Socket activation in (FAULTS row 45): under `systemd-socket-activate`, the
 * sockets are handed to workers blocking (a Python worker doing a plain
 * `accept()` serves), `LISTEN_*` are consumed once (a second supervisor in the
 * same process does not take fd 3 again), explicit `listen` wins with a
 * warning, and a `LISTEN_PID` naming another process is said once.
 */
import { existsSync, writeFileSync } from "node:fs"
import * as Path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Option } from "effect"
import { assertNoneLeft, TAG_VAR } from "../helpers/procs.ts"
import { awaitExit, freePort, get, spawnPrimary, waitLine } from "../helpers/primary.ts"
import { fixture, tempDir } from "../helpers/supervise.ts"

const ACTIVATE = "/usr/bin/systemd-socket-activate"
/** systemd-socket-activate starts its program with an empty environment but for what -E passes. */
const PASS_ENV = ["-E", "PATH", "-E", TAG_VAR, "-E", "PREFORK_TEST_DIR"]

const forever = { command: process.execPath, args: [fixture("forever.js")], processes: 1, stopTimeout: "1 second" }

/** The JSON after `<prefix> ` on the line that starts so. */
const lineJson = (lines: ReadonlyArray<string>, prefix: string): unknown => {
  const line = lines.find((l) => l.startsWith(`${prefix} `))
  assert.isDefined(line, `no line ${prefix}:\n${lines.join("\n")}`)
  return JSON.parse(line!.slice(prefix.length + 1))
}

describe.skipIf(!existsSync(ACTIVATE))("socket activation in (real processes, systemd-socket-activate)", () => {
  it.live(
    "a blocking-accept Python worker serves the activation socket; once taken, LISTEN_* are gone and a second supervisor does not take fd 3 again",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const port = yield* freePort
          const first = {
            command: "python3",
            args: [fixture("blocking-accept.py")],
            processes: 2,
            stopTimeout: "1 second"
          }
          const primary = yield* spawnPrimary("activation-twice.ts", [JSON.stringify(first), JSON.stringify(forever)], {
            prefix: [ACTIVATE, ...PASS_ENV, "-l", `127.0.0.1:${port}`],
            env: { PREFORK_TEST_DIR: dir }
          })
          // systemd-socket-activate starts the program on the first connection; this GET waits in the backlog.
          yield* waitLine(primary, /^Listening on .* as 3\./)
          const answer = yield* get(port, "/", 20_000)
          assert.isTrue(Option.isSome(answer), primary.lines.join("\n"))
          const served = JSON.parse(Option.getOrThrow(answer).body) as { pid: number; listenPid: string; flags: string }
          assert.strictEqual(served.listenPid, String(served.pid))
          assert.strictEqual(Number.parseInt(served.flags, 8) & 0o4000, 0, `fd 3 flags ${served.flags}`)
          // A second request, after the workers idled in accept(): still served, no worker crashed on EAGAIN.
          assert.isTrue(Option.isSome(yield* get(port, "/", 20_000)), primary.lines.join("\n"))
          assert.notInclude(primary.lines.join("\n"), "BlockingIOError")
          const env1 = lineJson(primary.lines, "ENV 1") as Record<string, string | undefined>
          assert.strictEqual(env1["LISTEN_FDS"], "1")
          writeFileSync(Path.join(dir, "stop-1"), "")
          yield* waitLine(primary, /^SOCKETS 2 /, "20 seconds")
          // Taken once: the variables are gone, and the second supervisor (no listen) holds no socket.
          assert.deepStrictEqual(lineJson(primary.lines, "ENV 2"), {})
          assert.deepStrictEqual(lineJson(primary.lines, "SOCKETS 2"), [])
          assert.notInclude(primary.lines.join("\n"), "FAILED")
          writeFileSync(Path.join(dir, "stop-2"), "")
          const exit = yield* awaitExit(primary, "20 seconds")
          assert.strictEqual(exit.code, 0, primary.lines.join("\n"))
          yield* assertNoneLeft(primary.tag)
        })
      )
  )

  it.live(
    "explicit listen wins over socket activation, with one warning; the activation socket is left for later",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const port = yield* freePort
          const explicit = { ...forever, listen: ["127.0.0.1:0"] }
          const later = { mode: "module", command: fixture("fd-server.js"), processes: 1, stopTimeout: "1 second" }
          const primary = yield* spawnPrimary(
            "activation-twice.ts",
            [JSON.stringify(explicit), JSON.stringify(later)],
            {
              prefix: [ACTIVATE, ...PASS_ENV, "-l", `127.0.0.1:${port}`],
              env: { PREFORK_TEST_DIR: dir }
            }
          )
          // This GET starts the program, and waits in the activation socket's backlog until the second supervisor serves it.
          yield* waitLine(primary, /^Listening on .* as 3\./)
          const pending = yield* Effect.forkChild(get(port, "/", 30_000))
          yield* waitLine(primary, /^SOCKETS 1 /, "20 seconds")
          const sockets1 = lineJson(primary.lines, "SOCKETS 1") as Array<{ address: { port: number } }>
          assert.strictEqual(sockets1.length, 1)
          assert.notStrictEqual(sockets1[0]!.address.port, port)
          assert.strictEqual(primary.lines.filter((l) => l.includes("listen addresses are given")).length, 1)
          writeFileSync(Path.join(dir, "stop-1"), "")
          yield* waitLine(primary, /^SOCKETS 2 /, "20 seconds")
          // Left alone by the first: the second supervisor takes it.
          assert.strictEqual((lineJson(primary.lines, "ENV 2") as Record<string, string>)["LISTEN_FDS"], "1")
          const sockets2 = lineJson(primary.lines, "SOCKETS 2") as Array<{ fd: number; address: { port: number } }>
          assert.deepStrictEqual(
            sockets2.map((s) => [s.fd, s.address.port]),
            [[3, port]]
          )
          const answer = yield* Fiber.join(pending)
          assert.isTrue(Option.isSome(answer), primary.lines.join("\n"))
          writeFileSync(Path.join(dir, "stop-2"), "")
          yield* waitLine(primary, /^ENV end /, "20 seconds")
          assert.deepStrictEqual(lineJson(primary.lines, "ENV end"), {})
          assert.strictEqual((yield* awaitExit(primary, "20 seconds")).code, 0, primary.lines.join("\n"))
          yield* assertNoneLeft(primary.tag)
        })
      )
  )
})

describe("socket activation meant for another process", () => {
  it.live("LISTEN_PID naming another process (ExecStart=npx …): nothing taken, one warning saying what to do", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const dir = yield* tempDir
        writeFileSync(Path.join(dir, "stop-1"), "")
        writeFileSync(Path.join(dir, "stop-2"), "")
        const primary = yield* spawnPrimary("activation-twice.ts", [JSON.stringify(forever), JSON.stringify(forever)], {
          env: { PREFORK_TEST_DIR: dir, LISTEN_FDS: "1", LISTEN_PID: "1", LISTEN_FDNAMES: "web" }
        })
        assert.strictEqual((yield* awaitExit(primary, "20 seconds")).code, 0, primary.lines.join("\n"))
        assert.deepStrictEqual(lineJson(primary.lines, "SOCKETS 1"), [])
        assert.deepStrictEqual(lineJson(primary.lines, "SOCKETS 2"), [])
        const warnings = primary.lines.filter((l) => l.includes("LISTEN_PID=1 names another process"))
        assert.strictEqual(warnings.length, 1, primary.lines.join("\n"))
        assert.include(warnings[0]!, "start this program directly")
        yield* assertNoneLeft(primary.tag)
      })
    )
  )
})
