/**
 * Worker output behind a reader that does not keep up: prefork passes the
 * backpressure on to the worker (its writes wait) instead of buffering the
 * output in its own memory; once the reader reads, every line arrives, in
 * order. A reader that goes away (EPIPE) ends the writing without crashing
 * prefork or blocking the worker.
 */
import { spawn } from "node:child_process"
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import * as Path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect } from "effect"
import type * as Scope from "effect/Scope"
import { assertNoneLeft, eventually, makeTag } from "../helpers/procs.ts"
import { tempDir } from "../helpers/supervise.ts"
import { BIN, fixture } from "./prefork.ts"

const MIB = 1024 * 1024
/** What the worker tries to write: far more than any buffer on the way. */
const FLOOD_MIB = 256

/**
 * Starts `prefork …args` with its stdout a pipe the test does not read
 * (until it says so); stderr is read. Killed at the end of the scope if
 * still running, and no process of its tag may be left.
 */
const preforkStalled = (args: ReadonlyArray<string>) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const { env: tagEnv, tag } = makeTag()
      const runtimeDir = mkdtempSync(Path.join(tmpdir(), "prefork-run-"))
      const child = spawn(process.execPath, [BIN, "--control", "off", ...args], {
        env: {
          ...process.env,
          PATH: `${Path.dirname(process.execPath)}${Path.delimiter}${process.env["PATH"] ?? ""}`,
          XDG_RUNTIME_DIR: runtimeDir,
          ...tagEnv
        },
        stdio: ["ignore", "pipe", "pipe"]
      })
      let stderr = ""
      child.stderr!.setEncoding("utf8")
      child.stderr!.on("data", (chunk: string) => (stderr += chunk))
      // Nobody reads stdout: its pipe fills.
      child.stdout!.pause()
      child.stdout!.on("error", () => {})
      const closed = Deferred.makeUnsafe<number | null>()
      child.on("close", (code) => Deferred.doneUnsafe(closed, Effect.succeed(code)))
      return {
        child,
        tag,
        runtimeDir,
        stderr: () => stderr,
        exit: Deferred.await(closed).pipe(
          Effect.timeoutOrElse({
            duration: "60 seconds",
            orElse: () => Effect.die(new Error(`prefork did not exit; stderr:\n${stderr}`))
          })
        )
      }
    }),
    (p) =>
      Effect.gen(function* () {
        if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL")
        yield* assertNoneLeft(p.tag, "5 seconds")
        rmSync(p.runtimeDir, { recursive: true, force: true })
      })
  )

/** Resident memory of a process, in bytes. */
const rss = (pid: number): number => {
  const line = readFileSync(`/proc/${pid}/status`, "utf8")
    .split("\n")
    .find((l) => l.startsWith("VmRSS:"))!
  return Number(/(\d+)/.exec(line)![1]) * 1024
}

/** The bytes the flooding worker has written so far. */
const progress = (dir: string): number => {
  try {
    return Number(readFileSync(`${dir}/progress`, "utf8")) || 0
  } catch {
    return 0
  }
}

/** Waits until the worker's progress has not moved for a second (bounded: 60 s), and returns it. */
const stalled = (dir: string) =>
  Effect.gen(function* () {
    let last = -1
    let still = 0
    for (let i = 0; i < 300 && still < 5; i++) {
      yield* Effect.sleep("200 millis")
      if (existsSync(`${dir}/flushed`)) break
      const now = progress(dir)
      still = now === last ? still + 1 : 0
      last = now
    }
    return progress(dir)
  })

describe("prefork: worker output behind a stalled reader (real processes)", () => {
  it.live(
    "the flooding worker's writes wait and prefork's memory stays bounded; once read, every line arrives in order",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const p = yield* preforkStalled([
            "-n",
            "1",
            "--",
            "node",
            fixture("flood-progress.js"),
            dir,
            String(FLOOD_MIB)
          ])
          yield* eventually(() => (progress(dir) > 0 ? true : undefined), "20 seconds")
          const before = rss(p.child.pid!)
          const written = yield* stalled(dir)
          const after = rss(p.child.pid!)
          // Stopped well short of the flood: a few pipe and stream buffers' worth, nothing like 256 MiB.
          assert.isFalse(existsSync(`${dir}/flushed`), "the worker wrote everything into a pipe nobody reads")
          assert.isBelow(written, 16 * MIB, `the worker wrote ${written} bytes into a stalled pipe`)
          assert.isBelow(after - before, 30 * MIB, `prefork grew from ${before} to ${after} bytes`)

          // The reader reads now: the worker goes on, and every line arrives once, in order.
          let lines = 0
          let carry = ""
          let disorder: string | undefined
          p.child.stdout!.setEncoding("latin1")
          p.child.stdout!.on("data", (chunk: string) => {
            const text = carry + chunk
            let start = 0
            for (let nl = text.indexOf("\n"); nl !== -1; nl = text.indexOf("\n", start)) {
              const line = text.slice(start, nl)
              const number = Number(line.slice(line.indexOf("] ") + 2, line.indexOf("] ") + 10))
              if (number !== lines && disorder === undefined) disorder = `line ${lines}: ${line.slice(0, 40)}`
              lines++
              start = nl + 1
            }
            carry = text.slice(start)
          })
          p.child.stdout!.resume()
          assert.strictEqual(yield* p.exit, 0, p.stderr())
          assert.isTrue(existsSync(`${dir}/flushed`))
          assert.strictEqual(disorder, undefined)
          assert.strictEqual(lines, FLOOD_MIB * 1024)
        })
      ),
    120_000
  )

  it.live("a reader that goes away (EPIPE): the rest is dropped, the worker finishes, prefork exits normally", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const dir = yield* tempDir
        const p = yield* preforkStalled(["-n", "1", "--", "node", fixture("flood-progress.js"), dir, "64"])
        yield* eventually(() => (progress(dir) > 0 ? true : undefined), "20 seconds")
        const written = yield* stalled(dir)
        assert.isBelow(written, 16 * MIB)
        // The reader closes its end while prefork waits for it to drain.
        p.child.stdout!.destroy()
        assert.strictEqual(yield* p.exit, 0, p.stderr())
        assert.isTrue(existsSync(`${dir}/flushed`), "the worker was left blocked")
        assert.include(p.stderr(), "exited normally")
      })
    )
  )

  it.live(
    "a reader that never reads again does not keep prefork from exiting after SIGTERM (its flush at exit is bounded)",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const p = yield* preforkStalled(["-n", "1", "--", "node", fixture("flood-progress.js"), dir, "64"])
          yield* eventually(() => (progress(dir) > 0 ? true : undefined), "20 seconds")
          yield* stalled(dir)
          p.child.kill("SIGTERM")
          assert.strictEqual(yield* p.exit, 0, p.stderr())
          assert.include(p.stderr(), "Stopping 1 process")
        })
      ),
    60_000
  )
})
