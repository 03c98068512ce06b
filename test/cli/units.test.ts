/**
 * The pure parts of the CLI: reading the command line and option values,
 * the status table, the output prefix, the exit codes.
 */
import { assert, describe, it } from "@effect/vitest"
import { Cause, Duration, Exit, Option } from "effect"
import { CliError } from "effect/cli"
import * as Argv from "../../src/cli/Argv.ts"
import { BOOLEAN_FLAGS, VALUE_FLAGS } from "../../src/cli/Command.ts"
import * as ExitCode from "../../src/cli/ExitCode.ts"
import * as Output from "../../src/cli/Output.ts"
import * as Status from "../../src/cli/Status.ts"
import { ExitRecord, InvalidOptions, SpawnFailed, TooManyRestarts } from "../../src/Errors.ts"
import * as ExitStatus from "../../src/ExitStatus.ts"
import type { SlotStatus } from "../../src/Supervisor.ts"
import { TaskId } from "../../src/TaskId.ts"

const split = (argv: ReadonlyArray<string>) => Argv.splitCommand(argv, VALUE_FLAGS, BOOLEAN_FLAGS)
const ms = (d: Option.Option<Duration.Duration>) => Option.map(d, Duration.toMillis)

describe("Argv", () => {
  it("splitCommand: the command and everything after it belong to the command", () => {
    assert.deepStrictEqual(split(["-n", "2", "node", "a.js", "--port", "3"]), [
      "-n",
      "2",
      "--",
      "node",
      "a.js",
      "--port",
      "3"
    ])
    assert.deepStrictEqual(split(["--env", "A=1", "-e", "B=2", "sh", "-c", "x"]), [
      "--env",
      "A=1",
      "-e",
      "B=2",
      "--",
      "sh",
      "-c",
      "x"
    ])
    assert.deepStrictEqual(split(["-n=2", "--stop-timeout=1s", "node"]), ["-n=2", "--stop-timeout=1s", "--", "node"])
    assert.deepStrictEqual(split(["-n", "-1", "node"]), ["-n", "-1", "--", "node"])
    assert.deepStrictEqual(split(["--no-prefix", "node", "-n", "3"]), ["--no-prefix", "--", "node", "-n", "3"])
    assert.deepStrictEqual(split(["--prefix", "false", "node"]), ["--prefix", "false", "--", "node"])
    assert.deepStrictEqual(split(["--bogus", "node"]), ["--bogus", "--", "node"])
    assert.deepStrictEqual(split(["-"]), ["--", "-"])
  })

  it("splitCommand: a -- counts only before the first operand; after the command it is the command's", () => {
    // [what the user typed after prefork, what effect/cli is given]
    const cases: ReadonlyArray<readonly [ReadonlyArray<string>, ReadonlyArray<string>]> = [
      [
        ["node", "app.js", "--port", "80", "--", "x"],
        ["--", "node", "app.js", "--port", "80", "--", "x"]
      ],
      [
        ["-n", "4", "npm", "start", "--", "--port", "80"],
        ["-n", "4", "--", "npm", "start", "--", "--port", "80"]
      ],
      [
        ["node", "-e", "code", "--", "x"],
        ["--", "node", "-e", "code", "--", "x"]
      ],
      [
        ["node", "app.js", "--", "a", "b"],
        ["--", "node", "app.js", "--", "a", "b"]
      ],
      [
        ["-n", "2", "--", "node", "--", "x"],
        ["-n", "2", "--", "node", "--", "x"]
      ],
      [
        ["node", "--", "-x"],
        ["--", "node", "--", "-x"]
      ]
    ]
    for (const [typed, given] of cases) assert.deepStrictEqual(split(typed), given, typed.join(" "))
    assert.deepStrictEqual(split(["--help"]), ["--help"])
    assert.deepStrictEqual(split(["-n", "2"]), ["-n", "2"])
  })

  it("parseDuration: a number with a unit, 0, or Effect's words; never a bare number", () => {
    assert.deepStrictEqual(ms(Argv.parseDuration("500ms")), Option.some(500))
    assert.deepStrictEqual(ms(Argv.parseDuration("5s")), Option.some(5000))
    assert.deepStrictEqual(ms(Argv.parseDuration("1.5m")), Option.some(90_000))
    assert.deepStrictEqual(ms(Argv.parseDuration("2h")), Option.some(7_200_000))
    assert.deepStrictEqual(ms(Argv.parseDuration("0")), Option.some(0))
    assert.deepStrictEqual(ms(Argv.parseDuration("5 seconds")), Option.some(5000))
    for (const bad of ["5", "-1s", "1d", "s", "", "5 parsecs", "Infinity"]) {
      assert.isTrue(Option.isNone(Argv.parseDuration(bad)), bad)
    }
  })

  it("parseIntensity, parseCount, parseCodes, parseEnv", () => {
    assert.deepStrictEqual(
      Option.map(Argv.parseIntensity("5/10s"), (i) => [i.maxRestarts, Duration.toMillis(i.within)]),
      Option.some([5, 10_000])
    )
    for (const bad of ["5", "5/0", "x/1s", "5/10"]) assert.isTrue(Option.isNone(Argv.parseIntensity(bad)), bad)
    assert.deepStrictEqual(Argv.parseCount("3"), Option.some(3))
    assert.deepStrictEqual(Argv.parseCount("infinity"), Option.some(Infinity))
    assert.isTrue(Option.isNone(Argv.parseCount("-1")))
    assert.deepStrictEqual(Argv.parseCodes("0, 3"), Option.some([0, 3]))
    assert.isTrue(Option.isNone(Argv.parseCodes("256")))
    assert.deepStrictEqual(Argv.parseEnv("A=b=c"), Option.some(["A", "b=c"] as const))
    assert.deepStrictEqual(Argv.parseEnv("EMPTY="), Option.some(["EMPTY", ""] as const))
    assert.isTrue(Option.isNone(Argv.parseEnv("=x")))
    assert.isTrue(Option.isNone(Argv.parseEnv("NOEQUALS")))
  })
})

describe("Status", () => {
  const slot = (taskId: number, fields: Partial<SlotStatus>): SlotStatus => ({
    taskId: TaskId(taskId),
    state: "running",
    pid: Option.none(),
    replacement: Option.none(),
    restarts: 0,
    startedAt: Option.none(),
    lastExit: Option.none(),
    ...fields
  })

  it("the table: one row per slot, aligned", () => {
    const now = 1_000_000
    const text = Status.table(
      [
        slot(0, { pid: Option.some(41523), startedAt: Option.some(now - 65_000) }),
        slot(1, {
          pid: Option.some(7),
          restarts: 2,
          startedAt: Option.some(now - 12_400),
          lastExit: Option.some(ExitStatus.exited(1))
        }),
        slot(2, {
          state: "restarting",
          restarts: 3,
          startedAt: Option.some(now - 5),
          lastExit: Option.some(ExitStatus.signaled("SIGKILL"))
        })
      ],
      now
    )
    assert.strictEqual(
      text,
      [
        "TASK  PID    STATE       RESTARTS  UPTIME  LAST EXIT",
        "0     41523  running     0         1m05s   -",
        "1     7      running     2         12.4s   code 1",
        "2     -      restarting  3         -       SIGKILL"
      ].join("\n")
    )
  })

  it("formatUptime", () => {
    assert.deepStrictEqual([850, 12_400, 185_000, 7_620_000, 273_600_000].map(Status.formatUptime), [
      "850ms",
      "12.4s",
      "3m05s",
      "2h07m",
      "3d04h"
    ])
  })
})

describe("Output", () => {
  it("the prefix: [task:pid], colored by task id only when asked", () => {
    assert.strictEqual(Output.prefix(3, 41523, false), "[3:41523] ")
    assert.strictEqual(Output.prefix(0, 1, true), "\x1b[36m[0:1]\x1b[0m ")
    assert.notStrictEqual(Output.prefix(1, 1, true), Output.prefix(0, 1, true).replace("[0:", "[1:"))
  })

  it("color: on a terminal, unless NO_COLOR or TERM=dumb; FORCE_COLOR forces it", () => {
    const tty = { isTTY: true }
    const pipe = { isTTY: false }
    assert.isTrue(Output.useColor(tty, {}))
    assert.isFalse(Output.useColor(pipe, {}))
    assert.isFalse(Output.useColor(tty, { NO_COLOR: "1" }))
    assert.isFalse(Output.useColor(tty, { TERM: "dumb" }))
    assert.isTrue(Output.useColor(pipe, { FORCE_COLOR: "1" }))
    assert.isFalse(Output.useColor(tty, { FORCE_COLOR: "0" }))
  })

  it("each line is one write to the stream of its name; a broken stream stops the writing", () => {
    const make = () => {
      const writes: Array<string> = []
      let onError: (e: Error) => void = () => {}
      return {
        writes,
        fail: () => onError(Object.assign(new Error("EPIPE"), { code: "EPIPE" })),
        stream: {
          isTTY: false,
          write: (t: string) => writes.push(t),
          on: (_: "error", f: (e: Error) => void) => (onError = f)
        }
      }
    }
    const out = make()
    const err = make()
    const write = Output.make({ stdout: out.stream, stderr: err.stream, env: {} })
    write({ taskId: TaskId(0), pid: 10, stream: "stdout", line: "hello" })
    write({ taskId: TaskId(1), pid: 11, stream: "stderr", line: "oops" })
    out.fail()
    write({ taskId: TaskId(0), pid: 10, stream: "stdout", line: "lost" })
    write({ taskId: TaskId(0), pid: 10, stream: "stderr", line: "still" })
    assert.deepStrictEqual(out.writes, ["[0:10] hello\n"])
    assert.deepStrictEqual(err.writes, ["[1:11] oops\n", "[0:10] still\n"])
  })
})

describe("ExitCode", () => {
  const fail = (e: unknown) => Exit.failCause(Cause.fail(e))
  it("one code per outcome", () => {
    const exits = [new ExitRecord({ taskId: 0, pid: 1, status: ExitStatus.exited(1), at: 0 })]
    assert.strictEqual(ExitCode.fromExit(Exit.succeed(undefined)), 0)
    assert.strictEqual(ExitCode.fromExit(Exit.failCause(Cause.interrupt(1))), 0)
    assert.strictEqual(ExitCode.fromExit(fail(new TooManyRestarts({ restarts: 3, exits }))), 3)
    assert.strictEqual(ExitCode.fromExit(fail(new InvalidOptions({ field: "x", message: "y" }))), 2)
    assert.strictEqual(
      ExitCode.fromExit(
        fail(
          new CliError.ShowHelp({
            commandPath: ["prefork"],
            errors: [new CliError.MissingArgument({ argument: "command" })]
          })
        )
      ),
      2
    )
    assert.strictEqual(ExitCode.fromExit(fail(new CliError.ShowHelp({ commandPath: ["prefork"], errors: [] }))), 0)
    assert.strictEqual(
      ExitCode.fromExit(fail(new SpawnFailed({ taskId: 0, command: "x", code: "ENOENT", message: "" }))),
      127
    )
    assert.strictEqual(
      ExitCode.fromExit(fail(new SpawnFailed({ taskId: 0, command: "x", code: "EACCES", message: "" }))),
      126
    )
    assert.strictEqual(ExitCode.fromExit(fail(new ExitCode.ExitWith({ code: 1 }))), 1)
    assert.strictEqual(ExitCode.fromExit(Exit.die(new Error("boom"))), 1)
  })
})
