/**
 * The `prefork` command with sockets it owns (`--listen`) and in cluster mode
 * (`--cluster`), run as a user would, with Node and Python servers.
 */
import { execFileSync, spawnSync } from "node:child_process"
import { chmodSync, existsSync, lstatSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import * as Net from "node:net"
import { tmpdir } from "node:os"
import * as Path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber } from "effect"
import * as Listen from "../../src/Listen.ts"
import { type Answered, busyPort, getJson } from "../helpers/http.ts"
import { waitHttp } from "../helpers/primary.ts"
import { pidsWithTag } from "../helpers/procs.ts"
import { fixture, prefork, stderrHas } from "./prefork.ts"

/** The port prefork says it listens on: "Listening on 127.0.0.1:<port>". */
const listeningPort = (stderr: string): number => Number(/Listening on 127\.0\.0\.1:(\d+)/.exec(stderr)![1])

const root = process.getuid?.() === 0
const idOf = (flag: "-u" | "-g", user: string): number | undefined => {
  try {
    return Number(execFileSync("id", [flag, user], { encoding: "utf8" }).trim())
  } catch {
    return undefined
  }
}
const nobody = idOf("-u", "nobody")
const nobodyGroup = idOf("-g", "nobody")

/** A GET on a Unix socket from a process running as `uid:gid` (setpriv): the body, or the error code. */
const getAs = (uid: number, gid: number, socketPath: string): string => {
  const program = `require("http").get({ socketPath: ${JSON.stringify(socketPath)}, path: "/", timeout: 5000 }, (res) => {
    let body = ""; res.on("data", (c) => (body += c)); res.on("end", () => process.stdout.write(body))
  }).on("error", (e) => process.stdout.write("ERROR " + e.code))`
  const result = spawnSync(
    "setpriv",
    [`--reuid=${uid}`, `--regid=${gid}`, "--clear-groups", "--", process.execPath, "-e", program],
    { encoding: "utf8", timeout: 15_000 }
  )
  return result.stdout
}

const hasPython = (() => {
  try {
    execFileSync("python3", ["-c", "import socket"], { stdio: "ignore" })
    return true
  } catch {
    return false
  }
})()

describe("prefork --listen and --cluster (real processes)", () => {
  it.live(
    "--listen 127.0.0.1:0: Node workers serve fd 3; SIGHUP reloads under requests with none failed; SIGTERM exits 0",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const p = yield* prefork([
            "-n",
            "2",
            "--listen",
            "127.0.0.1:0",
            "--ready",
            "message",
            "--",
            "node",
            fixture("fd-server.js")
          ])
          yield* stderrHas(p, /Listening on 127\.0\.0\.1:\d+/)
          const port = listeningPort(p.stderr())
          const first = yield* getJson({ port })
          assert.isFalse("error" in first, p.stderr())
          const servedBy = (answers: ReadonlyArray<Answered>) =>
            new Set(answers.flatMap((a) => ("error" in a ? [] : [a.pid])))
          const before = servedBy(yield* Effect.forEach(Array.from({ length: 10 }), () => getJson({ port })))
          const answers: Array<Answered> = []
          const load = yield* Effect.forkChild(
            Effect.gen(function* () {
              for (let i = 0; i < 5000; i++) answers.push(yield* getJson({ port }))
            })
          )
          p.signal("SIGHUP")
          yield* stderrHas(p, "Reload finished", "30 seconds")
          yield* Fiber.interrupt(load)
          assert.deepStrictEqual(
            answers.filter((a) => "error" in a),
            []
          )
          // Every worker was replaced: the old ones are gone, only new ones answer.
          const live = pidsWithTag(p.tag)
          for (const pid of before) assert.notInclude(live, pid)
          const after = servedBy(yield* Effect.forEach(Array.from({ length: 10 }), () => getJson({ port })))
          for (const pid of after) assert.isFalse(before.has(pid))
          p.signal("SIGTERM")
          assert.deepStrictEqual(yield* p.exit, { code: 0, signal: null })
          assert.deepStrictEqual(pidsWithTag(p.tag), [])
        })
      )
  )

  it.live.skipIf(!hasPython)("--listen with a Python server built on socket.socket(fileno=3)", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const p = yield* prefork(["-n", "2", "--listen", "127.0.0.1:0", "--", "python3", fixture("fd-server.py")])
        yield* stderrHas(p, /Listening on 127\.0\.0\.1:\d+/)
        const answer = yield* getJson({ port: listeningPort(p.stderr()) })
        assert.isFalse("error" in answer, p.stderr())
        if (!("error" in answer)) {
          assert.strictEqual(answer.lang, "python")
          assert.strictEqual(answer.listenPid, String(answer.pid))
        }
        p.signal("SIGTERM")
        assert.strictEqual((yield* p.exit).code, 0)
      })
    )
  )

  it.live("--listen on a port in use exits 4 naming the address, having started nothing", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const port = yield* busyPort
        const p = yield* prefork(["--listen", `127.0.0.1:${port}`, "--", "node", fixture("fd-server.js")])
        const exit = yield* p.exit
        assert.strictEqual(exit.code, 4, p.stderr())
        assert.include(p.stderr(), `127.0.0.1:${port}`)
        assert.include(p.stderr(), "EADDRINUSE")
        assert.notInclude(p.stderr(), "Starting")
      })
    )
  )

  it.live("--cluster: node:cluster workers share the port the app listens on; ready when listening", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const port = yield* Effect.callback<number>((resume) => {
          const s = Net.createServer().listen(0, "127.0.0.1", () => {
            const free = (s.address() as Net.AddressInfo).port
            s.close(() => resume(Effect.succeed(free)))
          })
        })
        const p = yield* prefork(["-n", "2", "--cluster", "--", "node", fixture("http-worker.js"), String(port)])
        // Nothing listens before a worker does (the port is the workers'): ask until one answers (bounded).
        const answer = yield* waitHttp(port, "20 seconds")
        assert.strictEqual(answer.task !== undefined, true, p.stderr())
        p.signal("SIGHUP")
        yield* stderrHas(p, "Reload finished", "30 seconds")
        p.signal("SIGTERM")
        assert.strictEqual((yield* p.exit).code, 0)
      })
    )
  )

  it.live("--cluster with a program that is not node is a usage error (exit 2)", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const p = yield* prefork(["--cluster", "--", "python3", "app.py"])
        assert.strictEqual((yield* p.exit).code, 2)
        assert.include(p.stderr(), "--cluster")
      })
    )
  )

  it.effect("--listen unix:PATH,mode=NNNN: the mode is octal permissions; anything else is refused", () =>
    Effect.gen(function* () {
      const spec = yield* Listen.parse("unix:/run/app.sock,mode=0600")
      assert.deepInclude(spec, { _tag: "Unix", path: "/run/app.sock", mode: 0o600 })
      assert.deepInclude(yield* Listen.parse("/run/app.sock"), { path: "/run/app.sock", mode: undefined })
      assert.deepInclude(yield* Listen.parse("unix:/run/app.sock,mode=666"), { mode: 0o666 })
      for (const bad of ["unix:/run/app.sock,mode=0999", "unix:/run/app.sock,mode=", "unix:/run/app.sock,mode=u+rw"]) {
        const exit = yield* Effect.exit(Listen.parse(bad))
        assert.isTrue(Exit.isFailure(exit), bad)
      }
    })
  )

  it.live("--listen unix:…,mode=abc is a usage error (exit 2) naming the mode", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const p = yield* prefork(["--listen", "unix:/tmp/x.sock,mode=abc", "--", "node", fixture("fd-server.js")])
        assert.strictEqual((yield* p.exit).code, 2, p.stderr())
        assert.include(p.stderr(), "mode")
      })
    )
  )

  it.live.skipIf(!root || nobody === undefined || nobodyGroup === undefined)(
    "--user nobody --listen unix:PATH: the socket is 0660 nobody's from birth; nobody connects and is served, another user is refused",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = mkdtempSync(Path.join(tmpdir(), "prefork-unix-"))
          yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
          // Others may pass through (to reach the socket), not write: a directory of ours.
          chmodSync(dir, 0o755)
          const path = Path.join(dir, "app.sock")
          const p = yield* prefork([
            "--user",
            "nobody",
            "-n",
            "1",
            "--listen",
            `unix:${path}`,
            "--",
            "node",
            fixture("fd-server.js")
          ])
          yield* stderrHas(p, `Listening on unix:${path}`)
          const stat = lstatSync(path)
          assert.isTrue(stat.isSocket())
          assert.strictEqual(stat.mode & 0o7777, 0o660)
          assert.deepStrictEqual([stat.uid, stat.gid], [nobody, nobodyGroup])
          // nobody connects, and a worker running as nobody answers.
          const body = getAs(nobody!, nobodyGroup!, path)
          assert.notInclude(body, "ERROR", p.stderr())
          const served = JSON.parse(body) as { pid: number }
          const uid = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${served.pid}/status`, "utf8"))![1]
          assert.strictEqual(Number(uid), nobody)
          // A user who is neither the owner nor in the group cannot connect (0660).
          assert.strictEqual(getAs(nobody! - 1, nobody! - 1, path), "ERROR EACCES")
          p.signal("SIGTERM")
          assert.strictEqual((yield* p.exit).code, 0, p.stderr())
          assert.isFalse(existsSync(path))
        })
      )
  )
})
