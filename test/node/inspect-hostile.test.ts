/**
 * The stack capture treats the worker as untrusted (issue 16): a worker that
 * handles SIGUSR1 itself and opens a server of its own where the inspector
 * would be gets no request it can steer, no unbounded read, no time past the
 * deadline. A real blocked Node worker still gives its stack.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as Path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import type * as Scope from "effect/Scope"
import { MAX_HTTP_BODY, MAX_WS_TOTAL, signalAndCapture } from "../../src/node/internal/inspect.ts"
import { assertNoneLeft, eventually, makeTag } from "../helpers/procs.ts"
import { fixture } from "../helpers/supervise.ts"

interface Started {
  readonly child: ChildProcess
  readonly lines: () => ReadonlyArray<string>
}

/** Starts `node …args`, tagged, its stdout lines collected; SIGKILLed (by pid) and checked gone at scope close. */
const start = (args: ReadonlyArray<string>): Effect.Effect<Started, never, Scope.Scope> => {
  const { env, tag } = makeTag()
  return Effect.acquireRelease(
    Effect.sync(() => {
      const child = spawn(process.execPath, args, {
        env: { ...process.env, ...env },
        stdio: ["ignore", "pipe", "ignore"]
      })
      let out = ""
      child.stdout!.setEncoding("utf8")
      child.stdout!.on("data", (chunk: string) => {
        out += chunk
      })
      return { child, lines: () => out.split("\n").filter((l) => l.length > 0) }
    }),
    ({ child }) =>
      Effect.gen(function* () {
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
        yield* assertNoneLeft(tag, "5 seconds")
      })
  )
}

const has = (s: Started, prefix: string) => s.lines().find((l) => l.startsWith(prefix))

/** Runs the capture against `pid` with a deadline; fails the test if it has not ended 20 s after it. */
const capture = (pid: number, withinMillis: number) =>
  Effect.promise(() => signalAndCapture(pid, withinMillis, () => process.kill(pid, "SIGUSR1"))).pipe(
    Effect.timeoutOrElse({
      duration: withinMillis + 20_000,
      orElse: () => Effect.die(new Error("the capture did not end by its deadline"))
    })
  )

const hostile = (mode: string) =>
  Effect.gen(function* () {
    const worker = yield* start([fixture("inspect-hostile.js"), mode])
    yield* eventually(() => has(worker, "ready"), "10 seconds")
    return worker
  })

describe.skipIf(process.platform !== "linux")("the inspector capture against a hostile worker (real processes)", () => {
  it.live("a real blocked Node worker still gives its stack", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const dir = mkdtempSync(Path.join(tmpdir(), "prefork-inspect-"))
        yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
        const worker = yield* start(["--inspect-port=0", fixture("health-block.js"), dir])
        const pid = worker.child.pid!
        writeFileSync(Path.join(dir, "block"), "")
        yield* eventually(() => existsSync(Path.join(dir, `blocked-${pid}`)) || undefined, "10 seconds")
        const stack = yield* capture(pid, 10_000)
        assert.match(stack ?? "", /health-block\.js:\d+:\d+\)/, `no stack: ${stack}`)
      })
    )
  )

  for (const mode of ["redirect-port", "redirect-host"]) {
    it.live(`${mode}: a webSocketDebuggerUrl to another port or host is refused, never followed`, () =>
      Effect.scoped(
        Effect.gen(function* () {
          const worker = yield* hostile(mode)
          const stack = yield* capture(worker.child.pid!, 3000)
          assert.isUndefined(stack)
          // It asked what an inspector answers, and nothing more: no WebSocket, no connection to the trap.
          const requests = worker.lines().filter((l) => l.startsWith("request "))
          assert.deepStrictEqual(requests, ["request /json/version", "request /json/list"])
          assert.isUndefined(has(worker, "trap-hit"))
        })
      )
    )
  }

  it.live("other-host: a server on another address than 127.0.0.1 is not taken for the inspector", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const worker = yield* hostile("other-host")
        const stack = yield* capture(worker.child.pid!, 1500)
        assert.isUndefined(stack)
        assert.isDefined(has(worker, "bait "), "the bait was never opened")
        assert.isUndefined(has(worker, "request "))
        assert.isUndefined(has(worker, "trap-hit"))
      })
    )
  )

  for (const mode of ["drip", "ws-drip"]) {
    it.live(`${mode}: a worker that drips bytes forever is cut at the deadline, its connection closed`, () =>
      Effect.scoped(
        Effect.gen(function* () {
          const worker = yield* hostile(mode)
          const stack = yield* capture(worker.child.pid!, 1500)
          assert.isUndefined(stack)
          assert.isDefined(has(worker, "request "))
          // The supervisor's side closed the connection: the worker saw it.
          yield* eventually(() => has(worker, "closed "), "10 seconds")
        })
      )
    )
  }

  for (const [mode, cap] of [
    ["huge", MAX_HTTP_BODY],
    ["ws-flood", MAX_WS_TOTAL]
  ] as const) {
    it.live(`${mode}: an endless body is read up to its cap, then the connection is closed`, () =>
      Effect.scoped(
        Effect.gen(function* () {
          const worker = yield* hostile(mode)
          const stack = yield* capture(worker.child.pid!, 60_000)
          assert.isUndefined(stack)
          // It ended long before its 60 s deadline: the cap, not the time, stopped it.
          const closed = yield* eventually(() => has(worker, "closed "), "10 seconds")
          const written = Number(closed.split(" ")[1])
          // What the worker managed to write: the cap plus what the kernel's socket buffers held (a few MiB).
          assert.isBelow(written, cap + 64 * 1024 * 1024, `${written} bytes written`)
        })
      )
    )
  }

  it.live("ws-forge: a perfect imitation gets no more than a one-line stack, its control characters neutralized", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const worker = yield* hostile("ws-forge")
        const stack = yield* capture(worker.child.pid!, 5000)
        assert.isDefined(stack)
        assert.strictEqual(stack!.split("\n").length, 1, stack)
        assert.notMatch(stack!, /\p{Cc}/u)
        assert.include(stack!, "evil?[00:00:00] INFO forged line?[2J")
        yield* eventually(() => has(worker, "closed "), "10 seconds")
      })
    )
  )
})
