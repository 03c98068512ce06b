/**
 * The `prefork` bin, run as a user runs it (`prefork [options] -- node fixture.js`):
 * restarts, giving up, bad usage, signals, output, and arguments passed verbatim.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs"
import * as Path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { tempDir } from "../helpers/supervise.ts"
import { pidsWithTag } from "../helpers/procs.ts"
import { BOOLEAN_FLAGS, VALUE_FLAGS } from "../../src/cli/Command.ts"
import { awaitEvents, events, fixture, prefork, sleep, stderrHas } from "./prefork.ts"

/** stdout lines, without the last (empty) one. */
const lines = (text: string) => text.split("\n").slice(0, -1)

/** `[task:pid] rest` → [task, pid, rest]. */
const parse = (line: string) => {
  const m = /^\[(\d+):(\d+)\] (.*)$/s.exec(line)
  assert.isNotNull(m, `not a prefixed line: ${line.slice(0, 80)}`)
  return [Number(m![1]), Number(m![2]), m![3]!] as const
}

describe("prefork (the bin)", () => {
  it.live("restarts a failed worker with the same task id, then exits 0 once every worker exited normally", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const dir = yield* tempDir
        const p = yield* prefork(["-n", "2", "--", "node", fixture("cli-once.js"), dir])
        const { code } = yield* p.exit
        assert.strictEqual(code, 0, p.stderr())
        const started = lines(p.stdout()).map(parse)
        for (const task of [0, 1]) {
          const runs = started.filter(([t]) => t === task)
          assert.strictEqual(runs.length, 2, p.stdout())
          // The prefix and the worker's own PREFORK_TASK_ID agree; the pid changes, the task id does not.
          for (const [t, pid, text] of runs) assert.strictEqual(text, `started ${t} ${pid}`)
          assert.notStrictEqual(runs[0]![1], runs[1]![1])
          assert.include(p.stderr(), `WARN child ${task} (pid ${runs[0]![1]}) exited with status 1, restarting`)
          assert.include(p.stderr(), `INFO child ${task} (pid ${runs[1]![1]}) exited normally`)
        }
        assert.include(p.stderr(), "Every worker exited normally (2 restarts)")
      })
    )
  )

  it.live("gives up with exit code 3 once the budget is spent: 1 + 3 starts, nothing after", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const dir = yield* tempDir
        const file = Path.join(dir, "starts")
        const p = yield* prefork(["-n", "1", "--max-restarts", "3", "--", "node", fixture("append-exit.js"), file, "1"])
        const { code } = yield* p.exit
        assert.strictEqual(code, 3, p.stderr())
        assert.match(
          p.stderr(),
          /ERROR Too many child restarts, giving up after 3 restarts \(last: child 0 \(pid \d+\) exited with status 1\)/
        )
        yield* sleep("500 millis")
        assert.strictEqual(readFileSync(file, "utf8"), "xxxx")
      })
    )
  )

  describe("bad usage: exit code 2, a message that says what was wrong, nothing started", () => {
    const cases: ReadonlyArray<readonly [string, ReadonlyArray<string>, string]> = [
      [
        "a processes count that is not a number",
        ["-n", "abc", "--", "node", "x.js"],
        `Invalid value for flag --processes: "abc"`
      ],
      ["no command", ["-n", "2"], "Missing required argument: command"],
      ["an unknown option", ["--bogus", "--", "node", "x.js"], "Unrecognized flag: --bogus"],
      [
        "a duration without a unit",
        ["--stop-timeout", "5", "--", "node", "x.js"],
        `Invalid value for flag --stop-timeout: "5". Expected: a duration such as 500ms, 5s, 1m or 1h`
      ],
      ["a restart mode that does not exist", ["--restart", "sometimes", "--", "node", "x.js"], "--restart"],
      [
        "--ready message for a program that is not Node",
        ["--ready", "message", "--", "sh", "-c", "true"],
        "--ready message needs a Node program"
      ],
      [
        "a --cwd that is not a directory",
        ["--cwd", "/nonexistent/dir", "--", "node", "x.js"],
        "--cwd: /nonexistent/dir is not a directory"
      ]
    ]
    for (const [name, args, message] of cases) {
      it.live(name, () =>
        Effect.scoped(
          Effect.gen(function* () {
            const p = yield* prefork(args)
            const { code } = yield* p.exit
            assert.strictEqual(code, 2, p.stderr())
            assert.include(p.stderr(), `prefork: `)
            assert.include(p.stderr(), message)
            assert.include(p.stderr(), "Run 'prefork --help' for every option and its default.")
            assert.strictEqual(p.stdout(), "")
            assert.notInclude(p.stderr(), "Starting")
            assert.notInclude(p.stderr(), "ERROR")
          })
        )
      )
    }
  })

  it.live("--help lists every option with its default; --version prints the version", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const help = yield* prefork(["--help"])
        assert.strictEqual((yield* help.exit).code, 0)
        const text = help.stdout()
        for (const option of [
          "--processes, -n",
          "--restart",
          "--normal-exit-codes",
          "--max-restarts",
          "--intensity",
          "--backoff ",
          "--backoff-max",
          "--backoff-factor",
          "--reset-after",
          "--stop-timeout",
          "--ready ",
          "--ready-timeout",
          "--env, -e",
          "--cwd",
          "--prefix",
          "--log-format",
          "--help",
          "--version",
          "--log-level"
        ])
          assert.include(text, option)
        // Every option shown is known to the reader that finds where the command starts.
        for (const name of text.matchAll(/^ {2}(--[a-z-]+(?:, -[a-z])?)/gm)) {
          for (const flag of name[1]!.split(", ")) {
            const bare = flag.replace(/^-+/, "")
            assert.isTrue(VALUE_FLAGS.has(bare) || BOOLEAN_FLAGS.has(bare), flag)
          }
        }
        const flagLines = text
          .split("\n")
          .filter((l) => /^\s+--[a-z]/.test(l) && !/--(help|version|log-level)\b/.test(l))
        assert.isAbove(flagLines.length, 15)
        for (const line of flagLines) assert.include(line, "(default: ", line)
        const version = yield* prefork(["--version"])
        assert.strictEqual((yield* version.exit).code, 0)
        const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8"))
        assert.strictEqual(version.stdout().trim(), `prefork v${pkg.version}`)
      })
    )
  )

  describe("signals", () => {
    it.live("SIGTERM stops every worker once, gracefully, and exits 0", () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const p = yield* prefork(["-n", "3", "--", "node", fixture("cli-worker.js"), dir])
          yield* awaitEvents(dir, 3, ([e]) => e === "ready")
          p.signal("SIGTERM")
          const { code } = yield* p.exit
          assert.strictEqual(code, 0, p.stderr())
          const terms = events(dir)
            .filter(([e]) => e === "term")
            .map(([, task]) => task)
            .sort()
          assert.deepStrictEqual(terms, [0, 1, 2])
          assert.include(p.stderr(), "SIGTERM received: stopping")
          assert.include(p.stderr(), "Stopping 3 processes (SIGTERM, then SIGKILL after 5000 ms)")
          assert.notInclude(p.stderr(), "restarting")
          assert.deepStrictEqual(pidsWithTag(p.tag), [])
        })
      )
    )

    it.live("Ctrl-C to the whole process group, twice: each worker gets SIGTERM once, exit 0", () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          // Workers take 500 ms to exit: the second Ctrl-C comes while prefork is stopping them.
          const p = yield* prefork(["-n", "2", "--", "node", fixture("cli-worker.js"), dir, "0", "500"], {
            detached: true
          })
          yield* awaitEvents(dir, 2, ([e]) => e === "ready")
          process.kill(-p.pid, "SIGINT")
          yield* awaitEvents(dir, 2, ([e]) => e === "term")
          process.kill(-p.pid, "SIGINT")
          const { code } = yield* p.exit
          assert.strictEqual(code, 0, p.stderr())
          const all = events(dir)
          assert.deepStrictEqual(
            all
              .filter(([e]) => e === "term")
              .map(([, task]) => task)
              .sort(),
            [0, 1]
          )
          // Workers lead their own process groups: the terminal's Ctrl-C reaches prefork only.
          assert.deepStrictEqual(
            all.filter(([e]) => e === "int"),
            []
          )
          // Said in this order: the signal, then what the supervisor stops and how; the second Ctrl-C forces.
          const said = p.stderr()
          assert.isBelow(said.indexOf("SIGINT received: stopping"), said.indexOf("Stopping 2 processes"))
          assert.include(said, "SIGINT received again: killing every worker now (SIGKILL)")
        })
      )
    )

    it.live("SIGHUP is a rolling restart gated on readiness, spending no budget; SIGUSR2 prints the status table", () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const p = yield* prefork([
            "-n",
            "2",
            "--max-restarts",
            "0",
            "--ready",
            "message",
            "--",
            "node",
            fixture("cli-worker.js"),
            dir,
            "300"
          ])
          yield* awaitEvents(dir, 2, ([e]) => e === "ready")
          const before = events(dir)
          const old = [0, 1].map((task) => before.find(([e, t]) => e === "start" && t === task)![2])
          p.signal("SIGHUP")
          yield* stderrHas(p, "Reload finished")
          const after = events(dir)
            .slice(before.length)
            .map(([e, task, pid]) => `${e} ${task} ${pid === old[task] ? "old" : "new"}`)
          // A surge: each old worker is stopped only once its replacement, started beside it, is ready; one slot at a time.
          assert.deepStrictEqual(after, [
            "start 0 new",
            "ready 0 new",
            "term 0 old",
            "start 1 new",
            "ready 1 new",
            "term 1 old"
          ])
          const current = [0, 1].map((task) => events(dir).findLast(([e, t]) => e === "start" && t === task)![2])
          p.signal("SIGUSR2")
          yield* stderrHas(p, /TASK +PID +STATE +RESTARTS +UPTIME +LAST EXIT\n(.*\n){2}/)
          const table = p.stderr().split("\n")
          const header = table.findIndex((l) => l.startsWith("TASK"))
          const rows = table.slice(header + 1, header + 3).map((l) => l.split(/\s+/))
          assert.deepStrictEqual(
            rows.map((r) => [r[0], r[1], r[2], r[3], r[5], r[6]]),
            [
              ["0", String(current[0]), "running", "0", "code", "0"],
              ["1", String(current[1]), "running", "0", "code", "0"]
            ]
          )
          assert.match(p.stderr(), new RegExp(`child 0 \\(pid ${old[0]}\\) exited normally \\(replaced by pid \\d+\\)`))
          p.signal("SIGTERM")
          assert.strictEqual((yield* p.exit).code, 0, p.stderr())
        })
      )
    )

    it.live("SIGTTIN adds a worker with the next task id; SIGTTOU stops the highest one", () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const p = yield* prefork(["-n", "1", "--", "node", fixture("cli-worker.js"), dir])
          yield* awaitEvents(dir, 1, ([e]) => e === "ready")
          p.signal("SIGTTIN")
          yield* awaitEvents(dir, 1, ([e, task]) => e === "ready" && task === 1)
          yield* stderrHas(p, "Scaled from 1 to 2 processes")
          p.signal("SIGTTOU")
          yield* awaitEvents(dir, 1, ([e, task]) => e === "term" && task === 1)
          yield* stderrHas(p, "Scaling from 2 to 1 process: stopping child 1")
          // Signals of one kind sent back to back may merge into one: wait between them.
          yield* sleep("200 millis")
          p.signal("SIGTTOU")
          yield* stderrHas(p, "SIGTTOU received: already at 1 process, ignored")
          p.signal("SIGUSR2")
          yield* stderrHas(p, /TASK.*\n0 .*running.*\n/)
          assert.notMatch(p.stderr(), /TASK.*\n0 .*\n1 /)
          p.signal("SIGTERM")
          assert.strictEqual((yield* p.exit).code, 0, p.stderr())
          assert.deepStrictEqual(
            events(dir)
              .filter(([e]) => e === "term")
              .map(([, t]) => t),
            [1, 0]
          )
        })
      )
    )
  })

  describe("output", () => {
    it.live("a worker that writes 1 MiB then exits 1: every line, prefixed, not a byte lost; exit code 3", () =>
      Effect.scoped(
        Effect.gen(function* () {
          const p = yield* prefork(["-n", "1", "--max-restarts", "0", "--", "node", fixture("chatty.js"), "1024", "1"])
          assert.strictEqual((yield* p.exit).code, 3, p.stderr())
          const out = lines(p.stdout()).map(parse)
          const pid = out[0]![1]
          assert.isTrue(out.every(([task, p]) => task === 0 && p === pid))
          const pad = "x".repeat(1000)
          const expected = Array.from({ length: 1024 }, (_, i) => `${String(i).padStart(6, "0")} ${pad}`)
          assert.strictEqual(out.length, 1025)
          assert.isTrue(out.slice(0, 1024).every(([, , text], i) => text === expected[i]))
          // The unterminated last line of the crashing worker is kept, and ended with a newline.
          assert.strictEqual(out[1024]![2], "last words without newline")
          assert.include(p.stderr(), `[0:${pid}] to stderr ünïcödé\n`)
        })
      )
    )

    it.live("three workers writing 1 MiB at once: no line torn or lost; --restart never exits 1", () =>
      Effect.scoped(
        Effect.gen(function* () {
          const p = yield* prefork(["-n", "3", "--restart", "never", "--", "node", fixture("chatty.js"), "1024", "1"])
          assert.strictEqual((yield* p.exit).code, 1, p.stderr())
          const out = lines(p.stdout()).map(parse)
          for (const task of [0, 1, 2]) {
            const mine = out.filter(([t]) => t === task).map(([, , text]) => text)
            assert.strictEqual(mine.length, 1025, `task ${task}`)
            mine.slice(0, 1024).forEach((text, i) => {
              assert.strictEqual(text.length, 1007)
              assert.isTrue(text.startsWith(String(i).padStart(6, "0")))
            })
          }
          assert.include(p.stderr(), "3 of 3 workers ended abnormally")
        })
      )
    )

    it.live("--no-prefix passes the output through untouched", () =>
      Effect.scoped(
        Effect.gen(function* () {
          const p = yield* prefork([
            "-n",
            "1",
            "--max-restarts",
            "0",
            "--no-prefix",
            "--",
            "node",
            fixture("chatty.js"),
            "1024",
            "1"
          ])
          assert.strictEqual((yield* p.exit).code, 3)
          const pad = "x".repeat(1000)
          let expected = ""
          for (let i = 0; i < 1024; i++) expected += `${String(i).padStart(6, "0")} ${pad}\n`
          assert.strictEqual(p.stdout(), `${expected}last words without newline`)
          assert.include(p.stderr(), "to stderr ünïcödé\n")
        })
      )
    )

    it.live("--log-format json: one JSON object per line on stderr, task id and pid as annotations", () =>
      Effect.scoped(
        Effect.gen(function* () {
          const p = yield* prefork([
            "-n",
            "1",
            "--max-restarts",
            "0",
            "--log-format",
            "json",
            "--no-prefix",
            "--",
            "node",
            fixture("exit.js"),
            "7"
          ])
          assert.strictEqual((yield* p.exit).code, 3)
          const records = lines(p.stderr()).map((l) => JSON.parse(l))
          const exit = records.find((r) => String(r.message).startsWith("child 0"))
          assert.strictEqual(exit.level, "WARN")
          assert.deepInclude(exit.annotations, { taskId: 0, code: 7 })
          assert.strictEqual(records.at(-1).level, "ERROR")
        })
      )
    )
  })

  describe("arguments", () => {
    const tricky = [
      "; touch pwned",
      "$(touch pwned2)",
      "`touch pwned3`",
      "*",
      "a b",
      '"quoted"',
      "",
      "--help",
      "-n",
      "3",
      "-- x"
    ]

    it.live("arguments that look like shell syntax reach the worker verbatim, and no shell runs them", () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const p = yield* prefork(
            ["-n", "1", "--cwd", dir, "--", "node", fixture("write-args.js"), "out.json", ...tricky],
            {
              cwd: dir
            }
          )
          assert.strictEqual((yield* p.exit).code, 0, p.stderr())
          assert.deepStrictEqual(JSON.parse(readFileSync(Path.join(dir, "out.json"), "utf8")), tricky)
          assert.deepStrictEqual(readdirSync(dir).sort(), ["out.json"])
          assert.isFalse(existsSync(Path.join(process.cwd(), "pwned")))
        })
      )
    )

    it.live("without --, everything from the command on is the command's (its options too)", () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const p = yield* prefork(
            [
              "-n",
              "1",
              "--env",
              "GREETING=a=b",
              "node",
              fixture("write-args.js"),
              "out.json",
              "-n",
              "3",
              "--port",
              "80"
            ],
            {
              cwd: dir
            }
          )
          assert.strictEqual((yield* p.exit).code, 0, p.stderr())
          assert.deepStrictEqual(JSON.parse(readFileSync(Path.join(dir, "out.json"), "utf8")), [
            "-n",
            "3",
            "--port",
            "80"
          ])
          assert.include(p.stderr(), "Starting 1 process\n")
        })
      )
    )

    it.live("--env sets variables for every worker (a value may be empty or contain =)", () =>
      Effect.scoped(
        Effect.gen(function* () {
          const p = yield* prefork([
            "-n",
            "2",
            "-e",
            "GREETING=a=b",
            "--env",
            "EMPTY=",
            "--",
            "sh",
            "-c",
            'echo "$PREFORK_TASK_ID $GREETING [$EMPTY]"'
          ])
          assert.strictEqual((yield* p.exit).code, 0, p.stderr())
          const out = lines(p.stdout())
            .map(parse)
            .map(([task, , text]) => [task, text])
            .sort()
          assert.deepStrictEqual(out, [
            [0, "0 a=b []"],
            [1, "1 a=b []"]
          ])
        })
      )
    )
  })
})
