/**
 * A crash's last words come before the news of its death, in every mode,
 * with real processes: every line a worker wrote before it exited reaches
 * `onOutput` before its `Exited` event and the supervisor's "exited with
 * status 1" log line. The spawner reports the exit only once the worker's
 * pipes are drained (bounded: see `pipes.test.ts` for a grandchild holding
 * the pipe).
 *
 * The line came after the exit in one run of two with a 1 MiB last line
 * without a newline: each case below restarts its worker three times, so four
 * exits race their last lines per case.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Logger, Stream } from "effect"
import * as NodeProcessSpawner from "../../src/node/NodeProcessSpawner.ts"
import type { Mode, OutputLine } from "../../src/ProcessSpawner.ts"
import * as Supervisor from "../../src/Supervisor.ts"
import { assertNoneLeft, makeTag } from "../helpers/procs.ts"
import { fixture } from "../helpers/supervise.ts"

/** One ordered log of what a user sees: output lines, events, log lines. */
type Seen =
  | { readonly _tag: "line"; readonly pid: number; readonly line: string }
  | { readonly _tag: "exited"; readonly pid: number }
  | { readonly _tag: "log"; readonly message: string }

/** What each fixture writes: the lines `onOutput` must get from every incarnation, checked by `expect`. */
const cases = {
  // One line of 1 MiB without a newline.
  line: (lines: ReadonlyArray<string>) => {
    assert.strictEqual(lines.length, 1)
    assert.strictEqual(lines[0], "w".repeat(1 << 20))
  },
  // 4,000 numbered lines, then "last" without a newline.
  lines: (lines: ReadonlyArray<string>) => {
    assert.strictEqual(lines.length, 4001)
    lines.slice(0, 4000).forEach((line, i) => assert.isTrue(line.startsWith(String(i).padStart(6, "0"))))
    assert.strictEqual(lines[4000], "last")
  }
} as const

/** A sink that holds the stream for a while after some lines (backpressure): the exit must wait for it too. */
const slowSink =
  (push: (line: OutputLine) => void) =>
  (line: OutputLine): void | Effect.Effect<void> => {
    push(line)
    // Every 500th line (and a lone 1 MiB line) waits 20 ms: the pipe fills meanwhile.
    const n = Number(line.line.slice(0, 6))
    return line.line.length > 1000 || line.line === "last" || n % 500 === 0 ? Effect.sleep("20 millis") : undefined
  }

const RESTARTS = 3

const run = (mode: Mode, what: keyof typeof cases, slow: boolean) =>
  Effect.scoped(
    Effect.gen(function* () {
      const seen: Array<Seen> = []
      const { env, tag } = makeTag()
      const logger = Logger.make<unknown, void>(({ message }) => {
        seen.push({ _tag: "log", message: (Array.isArray(message) ? message : [message]).map(String).join(" ") })
      })
      const push = (line: OutputLine) => {
        if (line.stream === "stdout") seen.push({ _tag: "line", pid: line.pid, line: line.line })
      }
      const handle = yield* Supervisor.start({
        mode,
        command: mode === "command" ? process.execPath : fixture("last-words.js"),
        args: mode === "command" ? [fixture("last-words.js"), what] : [what],
        processes: 1,
        maxRestarts: RESTARTS,
        stdio: "pipe",
        onOutput: slow ? slowSink(push) : push,
        ready: "spawn",
        stopTimeout: "1 second",
        env
      }).pipe(Effect.provide(Logger.layer([logger])))
      yield* handle.events.pipe(
        Stream.runForEach((event) =>
          Effect.sync(() => {
            if (event._tag === "Exited") seen.push({ _tag: "exited", pid: event.pid })
          })
        ),
        Effect.forkScoped
      )
      // Four exits with status 1: the fourth is one too many.
      yield* Effect.flip(handle.await)
      const exits = seen.flatMap((s, i) => (s._tag === "exited" ? [{ pid: s.pid, at: i }] : []))
      assert.strictEqual(exits.length, RESTARTS + 1)
      for (const exit of exits) {
        const logged = seen.findIndex((s) => s._tag === "log" && s.message.includes(`(pid ${exit.pid}) exited`))
        assert.isAbove(logged, -1, `no log line for the exit of pid ${exit.pid}`)
        const before = Math.min(exit.at, logged)
        const lines = (upTo: number) =>
          seen.slice(0, upTo).flatMap((s) => (s._tag === "line" && s.pid === exit.pid ? [s.line] : []))
        // Everything the worker wrote, complete, before either news of its exit.
        cases[what](lines(before))
        assert.strictEqual(lines(seen.length).length, lines(before).length, `output of pid ${exit.pid} after its exit`)
      }
      yield* assertNoneLeft(tag)
    })
  ).pipe(Effect.provide(NodeProcessSpawner.layer))

const modes: ReadonlyArray<Mode> = ["command", "module", "cluster"]

for (const mode of modes) {
  describe(`${mode} mode: a crash's last words come before its Exited event (real processes)`, () => {
    for (const what of ["line", "lines"] as const) {
      for (const slow of [false, true]) {
        it.live(
          `${what === "line" ? "a 1 MiB line without a newline" : "4,000 lines"}${slow ? ", a slow sink" : ""}`,
          () => run(mode, what, slow)
        )
      }
    }
  })
}
