/**
 * The control protocol without a socket, and its budgets with one, in
 * process, on the in-memory spawner.
 *
 * - Property: random bytes, random JSON, oversized and deeply nested lines,
 *   known commands with random values (huge, fractional, negative, strings,
 *   `__proto__`), cut into random chunks and fed to the line reader and the
 *   responder as a connection would. Afterwards: exactly one reply per line
 *   (one for a line over the cap, which ends the connection), never a failure
 *   or a defect, an error for every invalid request and the workers
 *   untouched by it, `processes` within bounds, a normal status still
 *   answered.
 * - The library's own bound: `processes` and `scale` above `MAX_PROCESSES`
 *   are `InvalidOptions`.
 * - `Control.serve` with short budgets: a silent client and a request that
 *   trickles in are cut at their deadlines while others are answered; a
 *   client that does not read its answer is cut; over the connection cap, the
 *   idlest connection makes room, and a newcomer is refused when all are busy.
 */
import { mkdtempSync, rmSync } from "node:fs"
import * as Net from "node:net"
import { tmpdir } from "node:os"
import * as Path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Layer, Logger, Schema, Scope } from "effect"
import { TestClock } from "effect/testing"
import * as Control from "../../src/cli/Control.ts"
import * as Protocol from "../../src/cli/ControlProtocol.ts"
import * as Supervisor from "../../src/Supervisor.ts"
import * as TestSpawner from "../../src/testing/TestSpawner.ts"
import { eventually } from "../helpers/procs.ts"

/** Pids no real process has: the `/proc` sample finds nothing for them. */
const FIRST_PID = 5_000_000

const Byte = Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 255 }))

/** A value where a number belongs: in range, out of range, not whole, not safe, not a number. */
const Value = Schema.Union([
  Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 5 })),
  Schema.Int.check(Schema.isBetween({ minimum: -3, maximum: 0 })),
  Schema.Literals([1e308, -1e308, 2.5, Number.MAX_SAFE_INTEGER + 1, Supervisor.MAX_PROCESSES + 1, 1_000_000_000]),
  Schema.String,
  Schema.Boolean,
  Schema.Null
])

/** One request line (or a piece of the byte stream) a client sends. */
const Command = Schema.TaggedStruct("Command", {
  cmd: Schema.Literals(["status", "restart", "reload", "scale", "__proto__", "constructor", "toString", "STATUS"]),
  value: Value,
  field: Schema.Literals(["task", "processes", "__proto__", "extra", "none"])
})
/** A well-formed request, its value in range or not. */
const Request = Schema.Union([
  Schema.TaggedStruct("Command", {
    cmd: Schema.Literals(["status", "reload"]),
    value: Value,
    field: Schema.Literal("none")
  }),
  Schema.TaggedStruct("Command", { cmd: Schema.Literal("restart"), value: Value, field: Schema.Literal("task") }),
  Schema.TaggedStruct("Command", { cmd: Schema.Literal("scale"), value: Value, field: Schema.Literal("processes") })
])
const Piece = Schema.Union([
  // Random bytes, ended by a newline (they may hold more).
  Schema.TaggedStruct("Bytes", { bytes: Schema.Array(Byte).check(Schema.isMaxLength(64)) }),
  Schema.TaggedStruct("Json", { value: Schema.Json }),
  Command,
  Request,
  Request,
  Schema.TaggedStruct("Proto", { cmd: Schema.Literals(["scale", "status"]) }),
  Schema.TaggedStruct("Deep", { depth: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 2500 })) })
])
/** A line about the cap or (far) over it, which ends the connection. */
const Long = Schema.TaggedStruct("Long", {
  bytes: Schema.Int.check(Schema.isBetween({ minimum: 4000, maximum: 200_000 })),
  newline: Schema.Boolean
})
type Piece = typeof Piece.Type | typeof Long.Type

const Scenario = Schema.Struct({
  processes: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 3 })),
  pieces: Schema.Array(Piece).check(Schema.isMinLength(4), Schema.isMaxLength(16)),
  /** Sent after the pieces, if any: the connection ends there when it is over the cap. */
  long: Schema.NullOr(Long),
  /** The sizes the byte stream is cut into, cycled. */
  chunks: Schema.Array(Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 70_000 }))).check(
    Schema.isMinLength(1),
    Schema.isMaxLength(6)
  )
})
type Scenario = typeof Scenario.Type

/** The bytes a piece puts on the wire. */
const encode = (piece: Piece): Buffer => {
  switch (piece._tag) {
    case "Bytes":
      return Buffer.from([...piece.bytes, 10])
    case "Json":
      return Buffer.from(`${JSON.stringify(piece.value)}\n`)
    case "Command": {
      const body: Record<string, unknown> = { cmd: piece.cmd }
      if (piece.field !== "none") body[piece.field] = piece.value
      return Buffer.from(`${JSON.stringify(body)}\n`)
    }
    case "Proto":
      // `__proto__` as an own key, as JSON.parse makes it: a request smuggled in the prototype is none.
      return Buffer.from(`{"__proto__":{"cmd":"${piece.cmd}","processes":4}}\n`)
    case "Deep":
      return Buffer.from(`${"[".repeat(piece.depth)}${"]".repeat(piece.depth)}\n`)
    case "Long":
      return Buffer.from(`${"a".repeat(piece.bytes)}${piece.newline ? "\n" : ""}`)
  }
}

/** Whether a line is a request the responder may carry out (anything else must be refused). */
const valid = (line: string, processes: number): boolean => {
  let value: unknown
  try {
    value = JSON.parse(line)
  } catch {
    return false
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return false
  const v = value as Record<string, unknown>
  const keys = Object.keys(v).sort().join(",")
  const whole = (n: unknown, min: number, max: number) =>
    typeof n === "number" && Number.isSafeInteger(n) && n >= min && n <= max
  switch (v["cmd"]) {
    case "status":
    case "reload":
      return keys === "cmd"
    case "restart":
      return keys === "cmd,task" && whole(v["task"], 0, processes - 1)
    case "scale":
      return keys === "cmd,processes" && whole(v["processes"], 1, Supervisor.MAX_PROCESSES)
    default:
      return false
  }
}

const livePids = (spawner: TestSpawner.TestSpawner["Service"]) =>
  Effect.map(spawner.live, (live) => live.map((p) => p.pid).sort())

const runScenario = (scenario: Scenario) =>
  Effect.gen(function* () {
    const spawner = yield* TestSpawner.TestSpawner
    const scope = yield* Scope.make()
    const handle = yield* Supervisor.start({ command: "worker", processes: scenario.processes }).pipe(
      Scope.provide(scope)
    )
    const respond = yield* Protocol.makeResponder(handle)
    /** Answers one line as the server does, the clock moved on for the status sample. */
    const answer = (line: string) =>
      Effect.gen(function* () {
        const fiber = yield* Effect.forkChild(Effect.exit(respond(line)))
        yield* TestClock.adjust("1 second")
        const exit = yield* Fiber.join(fiber)
        assert.isTrue(Exit.isSuccess(exit), `a reply failed or died for ${JSON.stringify(line.slice(0, 80))}`)
        return (exit as Exit.Success<Protocol.Reply>).value
      })

    const stream = Buffer.concat([...scenario.pieces, ...(scenario.long === null ? [] : [scenario.long])].map(encode))
    const lines = new Protocol.Lines()
    let replies = 0
    let requests = 0
    let closed = false
    for (let at = 0, i = 0; at < stream.length && !closed; i++) {
      const size = scenario.chunks[i % scenario.chunks.length]!
      lines.push(stream.subarray(at, at + size))
      at += size
      // Bounded: a chunk holds at most as many lines as bytes.
      for (let n = 0; n <= size; n++) {
        const line = lines.next()
        if (line === undefined) break
        if (line instanceof Protocol.LineTooLong) {
          // The server answers the error and closes: nothing after it is read.
          assert.isAbove(stream.length, Protocol.MAX_LINE)
          replies++
          closed = true
          break
        }
        assert.isAtMost(Buffer.byteLength(line), Protocol.MAX_LINE)
        requests++
        const before = { processes: handle.processes, pids: yield* livePids(spawner) }
        const reply = yield* answer(line)
        replies++
        assert.isBoolean(reply.ok)
        if (!reply.ok) assert.isString(reply.error)
        if (!valid(line, before.processes)) {
          assert.isFalse(reply.ok, `accepted ${JSON.stringify(line.slice(0, 80))}`)
          // Refused: the workers are exactly as they were.
          assert.strictEqual(handle.processes, before.processes)
          assert.deepStrictEqual(yield* livePids(spawner), before.pids)
        }
        assert.isAtLeast(handle.processes, 1)
        assert.isAtMost(handle.processes, Supervisor.MAX_PROCESSES)
      }
    }
    // One reply per whole line read (and one for a line over the cap).
    assert.strictEqual(replies, requests + (closed ? 1 : 0))
    // The supervisor still answers a normal status, one row per worker.
    const status = yield* answer(`{"cmd":"status"}`)
    assert.isTrue(status.ok)
    assert.strictEqual((status["workers"] as ReadonlyArray<unknown>).length, handle.processes)
    yield* Scope.close(scope, Exit.void)
  }).pipe(Effect.provide(Layer.merge(TestSpawner.layer({ firstPid: FIRST_PID }), Logger.layer([]))))

describe("control protocol (in memory)", () => {
  it.effect.prop(
    "random, oversized and hostile input: one reply per request, never a defect, workers untouched by refusals",
    { scenario: Scenario },
    ({ scenario }) => runScenario(scenario),
    { timeout: 120_000, arbitrary: { runs: 300 } }
  )

  it("parses only the four requests, with bounded values", () => {
    const ok = (line: string) => {
      const r = Protocol.parse(line)
      return r._tag === "Success" ? r.success : r.failure.message
    }
    assert.deepStrictEqual(ok(`{"cmd":"scale","processes":4}`), { cmd: "scale", processes: 4 })
    assert.deepStrictEqual(ok(`{"cmd":"restart","task":0}`), { cmd: "restart", task: 0 })
    assert.strictEqual(
      ok(`{"cmd":"scale","processes":1e308}`),
      "processes must be a whole number from 1 to 100000, got 1e+308"
    )
    assert.strictEqual(
      ok(`{"cmd":"scale","processes":100001}`),
      "processes must be a whole number from 1 to 100000, got 100001"
    )
    assert.strictEqual(ok(`{"cmd":"restart","task":9007199254740993}`), "no worker with task id 9007199254740992")
    assert.strictEqual(ok(`{"cmd":"status","x":1}`), 'unexpected field "x" for status')
    assert.strictEqual(ok(`{"__proto__":{"cmd":"status"}}`), 'expected {"cmd": …}')
    assert.strictEqual(ok(`{"cmd":"status","__proto__":{}}`), 'unexpected field "__proto__" for status')
    assert.strictEqual(ok(`{"cmd":"constructor"}`), 'unknown command "constructor"')
    assert.strictEqual(ok(`[1]`), 'expected {"cmd": …}')
    assert.strictEqual(ok(`\u00ff`), "not JSON")
  })

  it.effect("the library bounds processes itself: start and scale above MAX_PROCESSES are InvalidOptions", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const over = yield* Effect.flip(
          Supervisor.start({ command: "worker", processes: Supervisor.MAX_PROCESSES + 1 })
        )
        assert.strictEqual(over._tag, "InvalidOptions")
        const handle = yield* Supervisor.start({ command: "worker", processes: 1 })
        for (const n of [Supervisor.MAX_PROCESSES + 1, 1e308, 1_000_000_000]) {
          const error = yield* Effect.flip(handle.scale(n))
          assert.strictEqual(error._tag, "InvalidOptions")
        }
        assert.strictEqual(handle.processes, 1)
      })
    ).pipe(Effect.provide(Layer.merge(TestSpawner.layer({ firstPid: FIRST_PID }), Logger.layer([]))))
  )

  it("a line over the cap is refused after the first chunk, however much follows", () => {
    const lines = new Protocol.Lines()
    lines.push(Buffer.alloc(65_536, 97))
    assert.instanceOf(lines.next(), Protocol.LineTooLong)
    assert.strictEqual(lines.pending, 0)
  })
})

/** A supervisor on the in-memory spawner serving its control socket with these budgets; the socket's path. */
const served = (limits: Partial<Control.Limits>, options: { processes?: number; sampleMillis?: number } = {}) =>
  Effect.gen(function* () {
    const dir = yield* Effect.acquireRelease(
      Effect.sync(() => mkdtempSync(Path.join(tmpdir(), "prefork-control-"))),
      (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
    )
    const path = Path.join(dir, "c.sock")
    const handle = yield* Supervisor.start({ command: "worker", processes: options.processes ?? 2 })
    yield* Control.serve(handle, path, { limits, sampleMillis: options.sampleMillis ?? 10 })
    return path
  })

/** What `served` runs on, provided around the test's scope so it outlives `served`. */
const inMemory = Layer.merge(TestSpawner.layer({ firstPid: FIRST_PID }), Logger.layer([]))

/** A raw client: everything it received, and whether the server closed it. */
const client = (path: string) =>
  Effect.acquireRelease(
    Effect.callback<{ socket: Net.Socket; received: () => string; closed: () => boolean }>((resume) => {
      const socket = Net.connect(path)
      let data = ""
      let closed = false
      socket.setEncoding("utf8")
      socket.on("data", (chunk: string) => (data += chunk))
      socket.on("error", () => {})
      socket.on("close", () => (closed = true))
      socket.once("connect", () => resume(Effect.succeed({ socket, received: () => data, closed: () => closed })))
    }),
    ({ socket }) => Effect.sync(() => socket.destroy())
  )

/** One request on a fresh connection: its answer. */
const request = (path: string, line: string) =>
  Effect.scoped(
    Effect.gen(function* () {
      const c = yield* client(path)
      c.socket.write(`${line}\n`)
      const text = yield* eventually(() => (c.received().includes("\n") ? c.received() : undefined), "10 seconds")
      return JSON.parse(text.slice(0, text.indexOf("\n"))) as Protocol.Reply
    })
  )

describe("Control.serve budgets (real sockets, in process)", () => {
  it.live("a silent client and a request trickling in are cut at their deadlines; others are answered meanwhile", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const path = yield* served({ idleTimeout: 300, requestTimeout: 600 })
        const silent = yield* client(path)
        const trickle = yield* client(path)
        // One byte every 50 ms: each byte would push back a timer that restarts on activity, never an absolute one.
        const bytes = Buffer.from(`{"cmd":"status"`)
        let sent = 0
        for (let i = 0; i < 200 && !trickle.closed(); i++) {
          trickle.socket.write(bytes.subarray(sent % bytes.length, (sent % bytes.length) + 1))
          sent++
          if (i === 3) assert.isTrue((yield* request(path, `{"cmd":"status"}`)).ok)
          yield* Effect.sleep(50)
        }
        assert.isTrue(trickle.closed(), "the trickling request was never cut")
        assert.include(trickle.received(), "request not complete within 600 ms")
        yield* eventually(() => silent.closed() || undefined)
        assert.include(silent.received(), "idle for 300 ms: closed")
        assert.isTrue((yield* request(path, `{"cmd":"status"}`)).ok)
      })
    ).pipe(Effect.provide(inMemory))
  )

  it.live("a client that does not take its answer is cut at the reply deadline", () =>
    Effect.scoped(
      Effect.gen(function* () {
        // 3,000 rows: an answer larger than the socket buffers, so the write waits on the client.
        const path = yield* served({ replyTimeout: 300 }, { processes: 3000 })
        const c = yield* client(path)
        c.socket.pause()
        c.socket.write(`{"cmd":"status"}\n`)
        // Unread, the answer stays unsent; then the connection is cut: the client reads a part of it, then the end.
        yield* Effect.sleep(1500)
        c.socket.resume()
        yield* eventually(() => c.closed() || undefined)
        assert.notInclude(c.received(), "\n")
        assert.isTrue((yield* request(path, `{"cmd":"restart","task":0}`)).ok)
      })
    ).pipe(Effect.provide(inMemory))
  )

  it.live("over the cap, the connection idle longest makes room; with every one busy, the newcomer is refused", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const path = yield* served({ maxConnections: 3 }, { sampleMillis: 1500 })
        const first = yield* client(path)
        yield* Effect.sleep(20)
        const second = yield* client(path)
        const third = yield* client(path)
        const fourth = yield* client(path)
        yield* eventually(() => first.closed() || undefined)
        assert.include(first.received(), "too many control connections (3): closed, idle longest")
        assert.isFalse(second.closed())
        // All three busy (a status sample takes 1.5 s): the next one is told and let go.
        for (const c of [second, third, fourth]) c.socket.write(`{"cmd":"status"}\n`)
        yield* Effect.sleep(100)
        const fifth = yield* client(path)
        yield* eventually(() => fifth.closed() || undefined)
        assert.include(fifth.received(), "too many control connections (3)")
        // The busy ones are answered (one shared sample).
        for (const c of [second, third, fourth]) {
          yield* eventually(() => c.received().includes("\n") || undefined)
          assert.isTrue((JSON.parse(c.received()) as Protocol.Reply).ok)
        }
      })
    ).pipe(Effect.provide(inMemory))
  )
})
