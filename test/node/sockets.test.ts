/**
 * Supervisor-owned listening sockets with real processes (FAULTS row 39):
 * bound before any worker starts, handed to every worker as fd 3 with
 * systemd's variables, held while every worker is down, closed after the last
 * one is reaped. Workers in Node and in Python.
 */
import { execFileSync } from "node:child_process"
import {
  chmodSync,
  chownSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  symlinkSync,
  writeFileSync
} from "node:fs"
import * as Path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber } from "effect"
import { answered, type Answered, busyPort, type FdAnswer, getJson, tcpPort } from "../helpers/http.ts"
import { assertNoneLeft, eventually, pidsWithTag } from "../helpers/procs.ts"
import { exitedEvents, fixture, started, supervise, tempDir } from "../helpers/supervise.ts"

describe("supervisor-owned sockets (real processes)", () => {
  it.live(
    "Node workers share 127.0.0.1:0; fd 3, LISTEN_PID = the worker's pid; every worker killed at once, the next GET is served",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const { events, handle, tag } = yield* supervise({
            mode: "module",
            command: fixture("fd-server.js"),
            processes: 2,
            listen: ["127.0.0.1:0"],
            ready: "message",
            stopTimeout: "1 second"
          })
          assert.strictEqual(handle.sockets.length, 1)
          const port = tcpPort(handle.sockets)
          assert.isAbove(port, 0)
          assert.strictEqual(events[0]?._tag, "Listening")
          yield* handle.awaitReady
          const first = answered(yield* getJson({ port }))
          assert.strictEqual(first.listenPid, String(first.pid))
          assert.strictEqual(first.names, `127.0.0.1_${port}`)
          const before = started(events).map((e) => e.pid)
          // Both workers die at once; the GET sent right after waits in the backlog and the replacements serve it.
          for (const pid of before) process.kill(pid, "SIGKILL")
          const after = answered(yield* getJson({ port }))
          assert.notInclude(before, after.pid)
          assert.strictEqual(after.listenPid, String(after.pid))
          yield* handle.stop
          assert.deepStrictEqual(pidsWithTag(tag), [])
          // Held until the last worker was reaped, then closed: the port refuses now.
          const refused = yield* getJson({ port })
          assert.deepStrictEqual(refused, { error: "ECONNREFUSED" })
        })
      )
  )

  it.live("a Python server built on socket.socket(fileno=3) serves the supervisor's socket (command mode)", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const { handle, tag } = yield* supervise({
          command: "python3",
          args: [fixture("fd-server.py")],
          processes: 2,
          listen: ["127.0.0.1:0"],
          stopTimeout: "2 seconds"
        })
        const port = tcpPort(handle.sockets)
        // Served as soon as a worker accepts; until then the connection waits in the backlog.
        const first = answered(yield* getJson({ port }))
        assert.strictEqual(first.lang, "python")
        assert.strictEqual(first.listenPid, String(first.pid))
        assert.include(pidsWithTag(tag), first.pid)
        yield* handle.stop
        assert.deepStrictEqual(pidsWithTag(tag), [])
      })
    )
  )

  it.live("a connection made before any worker exists waits and is served", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const { handle, tag } = yield* supervise({
          command: process.execPath,
          args: [fixture("fd-server.js")],
          processes: 1,
          listen: ["127.0.0.1:0"],
          ready: { delay: "0 millis" },
          stopTimeout: "1 second"
        })
        const port = tcpPort(handle.sockets)
        // Stop the only worker and ask at once: nothing accepts until the replacement listens.
        yield* handle.restart(0 as never)
        const served = answered(yield* getJson({ port }))
        assert.strictEqual(served.listenPid, String(served.pid))
        yield* handle.stop
        yield* assertNoneLeft(tag)
      })
    )
  )

  it.live("a port already in use is BindFailed naming the address, and nothing is started", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const port = yield* busyPort
        const exit = yield* Effect.exit(
          supervise({ command: process.execPath, args: [fixture("fd-server.js")], listen: [`127.0.0.1:${port}`] })
        )
        assert.isTrue(Exit.isFailure(exit))
        if (Exit.isFailure(exit)) {
          const error = exit.cause.reasons.find((r) => r._tag === "Fail")?.error
          assert.strictEqual(error?._tag, "BindFailed")
          if (error?._tag === "BindFailed") {
            assert.strictEqual(error.address, `127.0.0.1:${port}`)
            assert.strictEqual(error.code, "EADDRINUSE")
          }
        }
        const bad = yield* Effect.exit(
          supervise({ command: process.execPath, args: [fixture("fd-server.js")], listen: ["192.0.2.1:0"] })
        )
        assert.isTrue(Exit.isFailure(bad))
      })
    )
  )

  it.live(
    "a Python worker doing a plain blocking accept() on fd 3 serves, and does not crash-loop (TCP and Unix)",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const path = Path.join(dir, "py.sock")
          const { events, handle, tag } = yield* supervise({
            command: "python3",
            args: [fixture("blocking-accept.py")],
            processes: 2,
            listen: ["127.0.0.1:0", path],
            stopTimeout: "2 seconds"
          })
          const port = tcpPort(handle.sockets)
          for (let i = 0; i < 4; i++) {
            const answer = answered(yield* getJson(i % 2 === 0 ? { port } : { socketPath: path })) as FdAnswer & {
              flags: string
            }
            assert.strictEqual(answer.listenPid, String(answer.pid))
            // Handed over blocking: no O_NONBLOCK (04000) on the open file description every holder shares.
            assert.strictEqual(Number.parseInt(answer.flags, 8) & 0o4000, 0, `fd 3 flags ${answer.flags}`)
          }
          // Idle between requests, and no worker died on EAGAIN: two started, none exited.
          assert.strictEqual(started(events).length, 2)
          assert.deepStrictEqual(exitedEvents(events), [])
          yield* handle.stop
          assert.deepStrictEqual(pidsWithTag(tag), [])
        })
      )
  )

  it.live(
    "a Unix socket: its mode is set, a stale socket file is replaced, another file is never touched, and it is removed at the end",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const path = Path.join(dir, "app.sock")
          // A stale socket: bound by a process that is gone (no one listens).
          execFileSync(process.execPath, [
            "-e",
            `const s = require("net").createServer().listen(${JSON.stringify(path)}, () => process.exit(0))`
          ])
          assert.isTrue(lstatSync(path).isSocket())
          const { handle, tag } = yield* supervise({
            mode: "module",
            command: fixture("fd-server.js"),
            processes: 1,
            listen: [{ path, mode: 0o600 }],
            ready: "message"
          })
          yield* handle.awaitReady
          assert.strictEqual(lstatSync(path).mode & 0o777, 0o600)
          const served = answered(yield* getJson({ socketPath: path }))
          assert.strictEqual(served.names, `unix_${path}`)
          // While it listens, a second supervisor on the same path fails: the socket is live.
          const second = yield* Effect.exit(
            supervise({ mode: "module", command: fixture("fd-server.js"), listen: [path] })
          )
          assert.isTrue(Exit.isFailure(second))
          yield* handle.stop
          assert.deepStrictEqual(pidsWithTag(tag), [])
          yield* eventually(() => (existsSync(path) ? undefined : true))
          // A regular file where the socket would go is an error, and is left alone.
          writeFileSync(path, "not a socket")
          const clash = yield* Effect.exit(
            supervise({ mode: "module", command: fixture("fd-server.js"), listen: [path] })
          )
          assert.isTrue(Exit.isFailure(clash))
          assert.isTrue(lstatSync(path).isFile())
        })
      )
  )

  it.live("reload under a stream of requests: every pid replaced, no request fails (surge, 1 and 3 workers)", () =>
    Effect.scoped(
      Effect.gen(function* () {
        for (const processes of [1, 3]) {
          const { events, handle, tag } = yield* supervise({
            mode: "module",
            command: fixture("fd-server.js"),
            processes,
            listen: ["127.0.0.1:0"],
            ready: "message",
            stopTimeout: "2 seconds"
          })
          const port = tcpPort(handle.sockets)
          yield* handle.awaitReady
          const before = new Set(started(events).map((e) => e.pid))
          // Requests one after another on fresh connections, for as long as the reload runs (bounded).
          const answers: Array<Answered> = []
          const load = yield* Effect.forkChild(
            Effect.gen(function* () {
              for (let i = 0; i < 2000; i++) answers.push(yield* getJson({ port }))
            })
          )
          yield* handle.reload()
          yield* Fiber.interrupt(load)
          const failures = answers.filter((a) => "error" in a)
          assert.deepStrictEqual(failures, [], `failed requests during the reload of ${processes}`)
          assert.isAbove(answers.length, 0)
          const live = pidsWithTag(tag)
          assert.strictEqual(live.length, processes)
          for (const pid of live) assert.isFalse(before.has(pid), `pid ${pid} was not replaced`)
          yield* handle.stop
          assert.deepStrictEqual(pidsWithTag(tag), [])
        }
      })
    )
  )

  it.live("a replacement that cannot start fails the reload with ReloadFailed; the old worker keeps serving", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const dir = yield* tempDir
        const broken = Path.join(dir, "broken")
        const { handle, tag } = yield* supervise({
          mode: "module",
          command: fixture("fd-server.js"),
          args: [broken],
          processes: 2,
          listen: ["127.0.0.1:0"],
          ready: "message",
          maxRestarts: 0
        })
        const port = tcpPort(handle.sockets)
        yield* handle.awaitReady
        const before = pidsWithTag(tag).sort()
        writeFileSync(broken, "")
        const error = yield* Effect.flip(handle.reload())
        assert.strictEqual(error._tag, "ReloadFailed")
        if (error._tag === "ReloadFailed") {
          assert.strictEqual(error.taskId, 0)
          assert.deepStrictEqual(error.reloaded, [])
        }
        // Nothing was lost: the same workers serve, no budget was spent (maxRestarts 0 and still running).
        assert.deepStrictEqual(pidsWithTag(tag).sort(), before)
        assert.include(before, answered(yield* getJson({ port })).pid)
        yield* handle.stop
        assert.deepStrictEqual(pidsWithTag(tag), [])
      })
    )
  )

  it.live("a Unix socket gets mode 0660 by default, set at bind time, owned by the supervisor", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const dir = yield* tempDir
        const path = Path.join(dir, "default.sock")
        const { handle } = yield* supervise({
          command: process.execPath,
          args: [fixture("fd-server.js")],
          listen: [path]
        })
        const stat = lstatSync(path)
        assert.isTrue(stat.isSocket())
        assert.strictEqual(stat.mode & 0o7777, 0o660)
        assert.strictEqual(stat.uid, process.geteuid!())
        // The process umask was restored right after the bind.
        const umask = process.umask()
        assert.notStrictEqual(umask, 0o117)
        yield* handle.stop
      })
    )
  )

  it.live(
    "what is planted at a Unix socket's path (a symlink, another user's socket) or an unsafe directory is refused and left intact",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const run = (listen: ReadonlyArray<string>) =>
            Effect.flip(supervise({ command: process.execPath, args: [fixture("fd-server.js")], listen }))
          // A symbolic link to a file of ours: never followed, never removed, the target unchanged.
          const target = Path.join(dir, "target")
          writeFileSync(target, "precious")
          chmodSync(target, 0o600)
          const link = Path.join(dir, "link.sock")
          symlinkSync(target, link)
          const linked = yield* run([link])
          assert.strictEqual(linked._tag, "BindFailed")
          assert.include(linked.message, "symbolic link")
          assert.isTrue(lstatSync(link).isSymbolicLink())
          assert.strictEqual(readFileSync(target, "utf8"), "precious")
          assert.strictEqual(lstatSync(target).mode & 0o777, 0o600)
          // A stale socket that belongs to another user: not ours to remove.
          const foreign = Path.join(dir, "foreign.sock")
          execFileSync(process.execPath, [
            "-e",
            `require("net").createServer().listen(${JSON.stringify(foreign)}, () => process.exit(0))`
          ])
          const other = process.geteuid!() === 0 ? 65534 : undefined
          if (other !== undefined) {
            chownSync(foreign, other, other)
            const refused = yield* run([foreign])
            assert.strictEqual(refused._tag, "BindFailed")
            assert.include(refused.message, `uid ${other}`)
            assert.isTrue(lstatSync(foreign).isSocket())
            assert.strictEqual(lstatSync(foreign).uid, other)
          }
          // A directory others can write to (not sticky): they could swap the socket. Refused, nothing created.
          const open = Path.join(dir, "open")
          mkdirSync(open)
          chmodSync(open, 0o777)
          const unsafe = yield* run([Path.join(open, "app.sock")])
          assert.strictEqual(unsafe._tag, "BindFailed")
          assert.include(unsafe.message, "writable by others")
          assert.isFalse(existsSync(Path.join(open, "app.sock")))
          assert.strictEqual(lstatSync(open).mode & 0o7777, 0o777)
          // The same directory made sticky (as /tmp is) is fine.
          chmodSync(open, 0o1777)
          const { handle } = yield* supervise({
            command: process.execPath,
            args: [fixture("fd-server.js")],
            listen: [`unix:${Path.join(open, "app.sock")},mode=0600`]
          })
          assert.strictEqual(lstatSync(Path.join(open, "app.sock")).mode & 0o777, 0o600)
          yield* handle.stop
        })
      )
  )
})
