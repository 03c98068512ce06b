/**
 * The production lifecycle from a shell: `prefork --spares` (a spare's lines
 * are prefixed `[spare:pid]`; it takes a dead worker's task id; the status
 * table lists the spares) and `prefork --heartbeat` (a blocked worker is
 * killed as unresponsive, its inspector line on stderr, and spends budget).
 */
import { writeFileSync } from "node:fs"
import * as Path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { eventually } from "../helpers/procs.ts"
import { tempDir } from "../helpers/supervise.ts"
import { fixture, prefork, stderrHas } from "./prefork.ts"

const match = (text: string, pattern: RegExp): RegExpExecArray | undefined => pattern.exec(text) ?? undefined

describe("prefork: the production lifecycle", () => {
  it.live(
    "--spares 1: the spare boots as [spare:pid], with no task id, takes task 0's id when its worker dies, another boots",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const p = yield* prefork([
            "-n",
            "1",
            "--spares",
            "1",
            "--ready",
            "message",
            "--",
            "node",
            fixture("cli-spare.js")
          ])
          const spare = Number(
            (yield* eventually(() => match(p.stdout(), /\[spare:(\d+)\] booted spare/), "20 seconds"))[1]
          )
          const worker = Number((yield* eventually(() => match(p.stdout(), /\[0:(\d+)\] task 0/), "20 seconds"))[1])
          assert.notStrictEqual(spare, worker)
          assert.notMatch(p.stdout(), new RegExp(`\\[0:${spare}\\]`), "the spare had a task id before it was taken")
          // The status table (SIGUSR2) lists it.
          p.signal("SIGUSR2")
          yield* stderrHas(p, `spares: ${spare}`)
          process.kill(worker, "SIGKILL")
          yield* eventually(() => p.stdout().includes(`[0:${spare}] task 0`) || undefined, "20 seconds")
          // Another spare boots in the background.
          yield* eventually(
            () => (p.stdout().match(/\[spare:\d+\] booted spare/g) ?? []).length >= 2 || undefined,
            "20 seconds"
          )
          p.signal("SIGTERM")
          const exit = yield* p.exit
          assert.strictEqual(exit.code, 0, p.stderr())
        })
      ),
    60_000
  )

  it.live(
    "--heartbeat 1s: a worker whose loop blocks is killed as unresponsive (SIGUSR1 first), and spends budget",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const trigger = Path.join(dir, "block")
          const p = yield* prefork([
            "-n",
            "1",
            "--heartbeat",
            "1s",
            "--max-restarts",
            "0",
            "--ready",
            "message",
            "--",
            "node",
            fixture("cli-spare.js"),
            trigger
          ])
          yield* eventually(() => p.stdout().includes("task 0") || undefined, "20 seconds")
          writeFileSync(trigger, "")
          const exit = yield* p.exit
          // The budget (0) is spent by the unresponsive worker: TooManyRestarts, exit 3.
          assert.strictEqual(exit.code, 3, p.stderr())
          assert.match(p.stderr(), /unresponsive: no heartbeat for 1000 ms; sent SIGUSR1/)
          assert.match(p.stderr(), /\[0:\d+\] Debugger listening on ws:\/\/127\.0\.0\.1:\d+\//)
          // prefork logged the stack the worker's loop was stuck in, fetched from that inspector.
          assert.match(p.stderr(), /its event loop is stuck in:\n\s+at .*cli-spare\.js:\d+:\d+\)/)
        })
      ),
    60_000
  )
})
