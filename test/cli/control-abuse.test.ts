/**
 * Abusive clients on a real prefork's control socket, with its default
 * budgets:
 *
 * - 3,600 `status` requests in one write: answered one at a time (each with
 *   its own 200 ms sample, so no faster than that), a normal `prefork ctl
 *   status` answered meanwhile, and with `--heartbeat 2s` no worker killed
 *   (same pids, no restart).
 * - 10 MiB without a newline: an error line, the connection closed, the rest
 *   never read (the client's write fails).
 * - A request that never ends: cut at its 5 s deadline.
 * - 100 idle clients, then 100 slow ones, over the cap of 16: a normal
 *   `prefork ctl status` still answers.
 * - `ctl scale 1000000000`, `1e308`, fractions, strings, extra fields,
 *   `__proto__`, unknown commands, deep JSON, bytes that are not UTF-8:
 *   one error per line, the workers unchanged.
 */
import { spawnSync } from "node:child_process"
import { existsSync } from "node:fs"
import * as Net from "node:net"
import * as Path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { eventually } from "../helpers/procs.ts"
import { BIN, fixture, prefork, type Prefork } from "./prefork.ts"

/** Runs `prefork ctl …args` against this prefork's default socket: its exit code and output. */
const ctl = (p: Prefork, args: ReadonlyArray<string>) => {
  const r = spawnSync(process.execPath, [BIN, "ctl", ...args], {
    encoding: "utf8",
    env: { ...process.env, XDG_RUNTIME_DIR: p.runtimeDir },
    timeout: 30_000
  })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

/** The workers as `ctl status` lists them: `[task, pid, restarts]`. */
const workers = (p: Prefork) => {
  const r = ctl(p, ["status"])
  assert.strictEqual(r.code, 0, r.stderr)
  return r.stdout
    .trim()
    .split("\n")
    .slice(1)
    .map((line) => {
      const [task, pid, , restarts] = line.split(/\s+/)
      return [Number(task), Number(pid), Number(restarts)] as const
    })
}

/** The default socket of a prefork, named after its script (`node …/forever.js`: forever). */
const socketOf = (p: Prefork, name = "forever") => Path.join(p.runtimeDir, "prefork", `${name}.sock`)

/** A raw client: what it received (with the time each line came), whether the server closed it. */
const client = (path: string) =>
  Effect.acquireRelease(
    Effect.callback<{
      socket: Net.Socket
      received: () => string
      lines: () => Array<{ line: string; at: number }>
      closed: () => boolean
    }>((resume) => {
      const socket = Net.connect(path)
      let data = ""
      const lines: Array<{ line: string; at: number }> = []
      let closed = false
      socket.setEncoding("utf8")
      socket.on("data", (chunk: string) => {
        const at = performance.now()
        data += chunk
        for (let nl = data.indexOf("\n"); nl !== -1; nl = data.indexOf("\n")) {
          lines.push({ line: data.slice(0, nl), at })
          data = data.slice(nl + 1)
        }
      })
      socket.on("error", () => {})
      socket.on("close", () => (closed = true))
      socket.once("connect", () =>
        resume(
          Effect.succeed({
            socket,
            received: () => lines.map((l) => l.line).join("\n") + data,
            lines: () => lines,
            closed: () => closed
          })
        )
      )
    }),
    ({ socket }) => Effect.sync(() => socket.destroy())
  )

type Client = Effect.Success<ReturnType<typeof client>>

describe("control socket under abuse (real processes)", () => {
  it.live(
    "3,600 requests in one write are answered one at a time; ctl status answers meanwhile; with --heartbeat 2s no worker is killed",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const p = yield* prefork([
            "-n",
            "2",
            "--heartbeat",
            "2s",
            "--ready",
            "message",
            "--",
            "node",
            fixture("cli-spare.js")
          ])
          yield* eventually(
            () => (p.stdout().includes("task 0") && p.stdout().includes("task 1")) || undefined,
            "30 seconds"
          )
          yield* eventually(() => existsSync(socketOf(p, "cli-spare")) || undefined)
          const before = workers(p)
          const flood = yield* client(socketOf(p, "cli-spare"))
          flood.socket.write(`{"cmd":"status"}\n`.repeat(3600))
          const ANSWERS = 15
          yield* eventually(() => flood.lines().length >= ANSWERS || undefined, "60 seconds")
          const answers = flood.lines().slice(0, ANSWERS)
          for (const { line } of answers) {
            const reply = JSON.parse(line) as { ok: boolean; workers: Array<unknown> }
            assert.deepStrictEqual([reply.ok, reply.workers.length], [true, 2])
          }
          // One in flight at a time, each with its own 200 ms sample: never faster than that (all at once would share one).
          assert.isAtLeast(answers.at(-1)!.at - answers[0]!.at, (ANSWERS - 1) * 190)
          // The flood goes on; a normal client is answered.
          assert.isFalse(flood.closed())
          const during = workers(p)
          assert.deepStrictEqual(during, before)
          flood.socket.destroy()
          // Longer than the heartbeat timeout has passed: a blocked loop would have had them killed.
          assert.deepStrictEqual(workers(p), before)
          assert.notMatch(p.stderr(), /unresponsive/)
          p.signal("SIGTERM")
          assert.strictEqual((yield* p.exit).code, 0, p.stderr())
        })
      ),
    120_000
  )

  it.live(
    "10 MiB without a newline, a request that never ends, 100 idle and 100 slow clients over the cap: each is cut, ctl status still answers",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const p = yield* prefork(["-n", "2", "--", "node", fixture("forever.js")])
          yield* eventually(() => existsSync(socketOf(p)) || undefined, "20 seconds")
          const before = workers(p)
          // 10 MiB, no newline: refused after the first 4 KiB; prefork stops reading, so the write never completes.
          const big = yield* client(socketOf(p))
          let writeError: Error | null | undefined
          big.socket.write(Buffer.alloc(10 * 1024 * 1024, 97), (error) => (writeError = error ?? null))
          yield* eventually(() => big.closed() || undefined, "15 seconds")
          // The error line is sent before the close; a client still writing may see the reset first and drop what it
          // had not read yet (a loaded machine did), so what it got is that line or nothing, never an answer.
          const said = big.received()
          if (said !== "") assert.include(said, `{"ok":false,"error":"request line longer than 4096 bytes"}`)
          yield* eventually(() => writeError !== undefined || undefined)
          assert.isNotNull(writeError, "all 10 MiB were taken")
          // A request begun and never ended: cut at its deadline.
          const endless = yield* client(socketOf(p))
          endless.socket.write(`{"cmd":"sta`)
          yield* eventually(() => endless.closed() || undefined, "20 seconds")
          assert.include(endless.received(), "request not complete within 5000 ms")
          // 100 idle clients: the cap is 16, each newcomer closes the idlest.
          const idle: Array<Client> = []
          for (let i = 0; i < 100; i++) idle.push(yield* client(socketOf(p)))
          yield* eventually(() => idle.filter((c) => c.closed()).length >= 84 || undefined, "20 seconds")
          assert.include(idle[0]!.received(), "too many control connections (16): closed, idle longest")
          assert.deepStrictEqual(workers(p), before)
          // 100 slow ones, each a request begun: the same.
          const slow: Array<Client> = []
          for (let i = 0; i < 100; i++) {
            const c = yield* client(socketOf(p))
            c.socket.write(`{"cmd":`)
            slow.push(c)
          }
          yield* eventually(() => slow.filter((c) => c.closed()).length >= 84 || undefined, "20 seconds")
          assert.deepStrictEqual(workers(p), before)
          for (const c of [...idle, ...slow]) c.socket.destroy()
          p.signal("SIGTERM")
          assert.strictEqual((yield* p.exit).code, 0, p.stderr())
        })
      ),
    120_000
  )

  it.live("out-of-range and hostile requests are refused, one error each, and the workers are unchanged", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const p = yield* prefork(["-n", "2", "--", "node", fixture("forever.js")])
        yield* eventually(() => existsSync(socketOf(p)) || undefined, "20 seconds")
        const before = workers(p)
        const huge = ctl(p, ["scale", "1000000000"])
        assert.deepStrictEqual(
          [huge.code, huge.stderr.trim()],
          [1, "prefork ctl: processes must be a whole number from 1 to 100000, got 1000000000"]
        )
        assert.strictEqual(ctl(p, ["restart", "99999999999"]).code, 1)
        // Not even a number for ctl: bad usage.
        assert.strictEqual(ctl(p, ["scale", "1e308"]).code, 2)
        const lines = [
          `{"cmd":"scale","processes":1e308}`,
          `{"cmd":"scale","processes":100001}`,
          `{"cmd":"scale","processes":-1}`,
          `{"cmd":"scale","processes":2.5}`,
          `{"cmd":"scale","processes":"3"}`,
          `{"cmd":"scale","processes":3,"force":true}`,
          `{"cmd":"restart","task":1e308}`,
          `{"cmd":"restart","task":-0.5}`,
          `{"cmd":"restart","task":2}`,
          `{"__proto__":{"cmd":"scale","processes":3}}`,
          `{"cmd":"__proto__"}`,
          `{"cmd":"constructor"}`,
          `{"cmd":["status"]}`,
          `${"[".repeat(2000)}${"]".repeat(2000)}`,
          `"status"`,
          ``,
          `\u00ff\u00fe`
        ]
        const c = yield* client(socketOf(p))
        c.socket.write(Buffer.concat(lines.map((l) => Buffer.from(`${l}\n`, "latin1"))))
        yield* eventually(() => c.lines().length >= lines.length || undefined, "20 seconds")
        const replies = c.lines().map(({ line }) => JSON.parse(line) as { ok: boolean; error: string })
        assert.strictEqual(replies.length, lines.length)
        assert.deepStrictEqual(
          replies.map((r) => r.ok),
          lines.map(() => false)
        )
        assert.strictEqual(replies[0]!.error, "processes must be a whole number from 1 to 100000, got 1e+308")
        assert.strictEqual(replies[8]!.error, "no worker with task id 2")
        assert.deepStrictEqual(workers(p), before)
        p.signal("SIGTERM")
        assert.strictEqual((yield* p.exit).code, 0, p.stderr())
      })
    )
  )

  it.live("prefork -n over the bound is bad usage", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const p = yield* prefork(["-n", "100001", "--", "node", fixture("forever.js")])
        const exit = yield* p.exit
        assert.strictEqual(exit.code, 2, p.stderr())
        assert.include(p.stderr(), "100000")
      })
    )
  )
})
