/**
 * prefork's signals keep no copy of the supervisor's state: SIGTTIN and
 * SIGTTOU count from the workers there are when they act (whatever changed
 * that count, `prefork ctl scale` too), and a second Ctrl-C kills every
 * process the supervisor still has, spares included, long before the stop
 * timeout. A spare being stopped is named a spare in the log.
 */
import { spawnSync } from "node:child_process"
import { readdirSync, readFileSync } from "node:fs"
import * as Path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { eventually, pidsWithTag } from "../helpers/procs.ts"
import { tempDir } from "../helpers/supervise.ts"
import { BIN, fixture, prefork, stderrHas } from "./prefork.ts"
import type { Prefork } from "./prefork.ts"

/** `prefork ctl …args` against `p`: its exit code and output. */
const ctl = (p: Prefork, args: ReadonlyArray<string>) => {
  const run = spawnSync(process.execPath, [BIN, "ctl", ...args], {
    encoding: "utf8",
    env: { ...process.env, XDG_RUNTIME_DIR: p.runtimeDir },
    timeout: 20_000
  })
  return { code: run.status, stdout: run.stdout, stderr: run.stderr }
}

/** Waits (bounded) until `prefork ctl status` shows `n` slots, every one running. */
const running = (p: Prefork, n: number) =>
  eventually(() => {
    const rows = ctl(p, ["status"]).stdout.trim().split("\n").slice(1)
    return rows.length === n && rows.every((row) => / running /.test(row)) ? true : undefined
  }, "15 seconds")

/** The pids of the processes of the spare-ignore-term.js fixture that have booted in `dir`, and as what. */
const booted = (dir: string, as: "spare" | "worker") =>
  readdirSync(dir)
    .filter((f) => f.startsWith("boot-"))
    .map((f) => Number(f.slice("boot-".length)))
    .filter((pid) => readFileSync(Path.join(dir, `boot-${pid}`), "utf8") === as)

/**
 * `prefork -n <workers> --spares 1 --stop-timeout <stopTimeout>` over workers that ignore SIGTERM, once every
 * worker has its task id and the spare has booted (their handlers installed): prefork, the spare's pid and the
 * workers' pids.
 */
const withSpare = (workers: number, stopTimeout: string) =>
  Effect.gen(function* () {
    const dir = yield* tempDir
    const flags = ["-n", String(workers), "--spares", "1", "--stop-timeout", stopTimeout]
    const p = yield* prefork([...flags, "--", "node", fixture("spare-ignore-term.js"), dir])
    const spare = yield* eventually(() => {
      const ready = readdirSync(dir).filter((f) => f.startsWith("ready-")).length
      const spares = booted(dir, "spare")
      return ready === workers && spares.length === 1 ? spares[0] : undefined
    }, "15 seconds")
    return { p, spare, workers: booted(dir, "worker") }
  })

describe("prefork: signals read the supervisor when they act (real processes)", () => {
  it.live("after `ctl scale 5`, SIGTTIN makes 6 workers; after `ctl scale 5` again, SIGTTOU makes 4", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const p = yield* prefork(["-n", "2", "--", "node", fixture("forever.js")])
        yield* running(p, 2)
        assert.strictEqual(ctl(p, ["scale", "5"]).stdout.trim(), "5 workers")
        yield* running(p, 5)
        p.signal("SIGTTIN")
        yield* stderrHas(p, /Scal(ed|ing) from 5 to \d+ process/)
        assert.include(p.stderr(), "Scaled from 5 to 6 processes")
        assert.include(p.stderr(), "SIGTTIN received: scaling from 5 to 6 processes")
        yield* running(p, 6)
        assert.strictEqual(ctl(p, ["scale", "5"]).stdout.trim(), "5 workers")
        p.signal("SIGTTOU")
        yield* stderrHas(p, /Scaling from 5 to \d+ process/)
        assert.include(p.stderr(), "Scaling from 5 to 4 processes:")
        assert.include(p.stderr(), "SIGTTOU received: scaling from 5 to 4 processes")
        yield* running(p, 4)
        p.signal("SIGTERM")
        assert.strictEqual((yield* p.exit).code, 0, p.stderr())
        assert.deepStrictEqual(pidsWithTag(p.tag), [])
      })
    )
  )

  it.live(
    "a second SIGINT with --spares 1 SIGKILLs the workers and the spare, all ignoring SIGTERM: prefork exits long before --stop-timeout 60s",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const { p, spare, workers } = yield* withSpare(2, "60s")
          assert.strictEqual(workers.length, 2)
          p.signal("SIGINT")
          yield* stderrHas(p, "Stopping 2 processes")
          p.signal("SIGINT")
          // p.exit waits 20 s at most: well below the 60 s every process would otherwise be given.
          const exit = yield* p.exit
          assert.strictEqual(exit.code, 0, p.stderr())
          assert.deepStrictEqual(pidsWithTag(p.tag), [])
          const said = p.stderr()
          assert.include(said, "SIGINT received again: killing every worker now (SIGKILL)")
          const killed = /SIGKILL sent to (.*)/.exec(said)?.[1] ?? ""
          assert.include(killed, `spare (pid ${spare})`, said)
          for (const pid of workers) assert.match(killed, new RegExp(`child [01] \\(pid ${pid}\\)`), said)
          assert.notInclude(said, `child 0 (pid ${spare})`)
        })
      )
  )

  it.live("a spare that outlives --stop-timeout is named a spare when it is killed, not child 0", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const { p, spare } = yield* withSpare(1, "1s")
        p.signal("SIGTERM")
        assert.strictEqual((yield* p.exit).code, 0, p.stderr())
        assert.deepStrictEqual(pidsWithTag(p.tag), [])
        const said = p.stderr()
        assert.include(said, `spare (pid ${spare}) still running 1000 ms after SIGTERM, sending SIGKILL`, said)
        assert.notInclude(said, `child 0 (pid ${spare})`)
      })
    )
  )

  it.live("SIGUSR2 shows a spare being stopped (a reload refreshes the spares) until it is reaped, named a spare", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const { p, spare } = yield* withSpare(1, "60s")
        p.signal("SIGHUP")
        yield* stderrHas(p, "SIGHUP received: reloading")
        // The reload stops the spare first; it ignores SIGTERM, so it stays being stopped for the 60 s.
        const shown = `stopping: spare (pid ${spare})`
        for (let i = 0; i < 50 && !p.stderr().includes(shown); i++) {
          p.signal("SIGUSR2")
          yield* Effect.sleep("200 millis")
        }
        assert.include(p.stderr(), shown)
        p.signal("SIGTERM")
        yield* stderrHas(p, "SIGTERM received: stopping")
        p.signal("SIGTERM")
        assert.strictEqual((yield* p.exit).code, 0, p.stderr())
        assert.deepStrictEqual(pidsWithTag(p.tag), [])
        assert.notInclude(p.stderr(), `child 0 (pid ${spare})`)
      })
    )
  )
})
