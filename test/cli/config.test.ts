/**
 * The config file (issue 18): `prefork.json` found in the working directory or
 * named by `--config`, every option keyed by its long flag name, flags winning
 * over it; a bad one (value, key, JSON, a link, a mode or owner others could
 * abuse, too large) refused with exit 2 naming the file and the key, before
 * anything starts. The JSON Schema is generated from the same definition and
 * must be the committed one.
 */
import { execFileSync } from "node:child_process"
import { chmodSync, chownSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs"
import * as Path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Result } from "effect"
import * as ConfigFile from "../../src/cli/ConfigFile.ts"
import * as Options from "../../src/cli/Options.ts"
import { eventually } from "../helpers/procs.ts"
import { tempDir } from "../helpers/supervise.ts"
import { prefork } from "./prefork.ts"

/** A worker printing its task id and two variables, then running until signaled (or exiting, with `exit`). */
const printer = (exit = false) => [
  "node",
  "-e",
  `console.log(process.env.PREFORK_TASK_ID, process.env.GREETING, process.env.OTHER)${exit ? "" : "; setInterval(() => {}, 1 << 30)"}`
]

/** Writes a config file as its owner would: mode 0644 unless said otherwise. */
const write = (file: string, content: unknown, mode = 0o644) => {
  writeFileSync(file, typeof content === "string" ? content : JSON.stringify(content, null, 2))
  chmodSync(file, mode)
  return file
}

const lines = (text: string) => text.split("\n").filter((line) => line.length > 0)

const nobody = (() => {
  try {
    return Number(execFileSync("id", ["-u", "nobody"], { encoding: "utf8" }).trim())
  } catch {
    return undefined
  }
})()
const root = process.getuid?.() === 0

describe("the config file", () => {
  it.live("prefork.json in the working directory: its count, env and stop timeout are used, and the log says so", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const dir = yield* tempDir
        write(Path.join(dir, "prefork.json"), {
          $schema: "./node_modules/effect-prefork/schema/prefork.schema.json",
          processes: 3,
          env: { GREETING: "hello", OTHER: "x" },
          "stop-timeout": "1500ms",
          command: printer()
        })
        const p = yield* prefork([], { cwd: dir })
        yield* eventually(() => (lines(p.stdout()).length >= 3 ? true : undefined), "10 seconds")
        assert.deepStrictEqual(
          lines(p.stdout())
            .map((l) => l.replace(/^\[(\d):\d+\] /, "$1 "))
            .sort(),
          ["0 0 hello x", "1 1 hello x", "2 2 hello x"]
        )
        p.signal("SIGTERM")
        const { code } = yield* p.exit
        assert.strictEqual(code, 0, p.stderr())
        assert.include(p.stderr(), `Config file: ${Path.join(dir, "prefork.json")}`)
        assert.include(p.stderr(), "Stopping 3 processes (SIGTERM, then SIGKILL after 1500 ms)")
      })
    )
  )

  it.live(
    "--config elsewhere; flags win: -n over the count, -e replaces the env list, the command replaces the file's",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const cwd = Path.join(dir, "cwd")
          mkdirSync(cwd)
          // A prefork.json in the working directory is not read when --config names another.
          write(Path.join(cwd, "prefork.json"), { processes: "lots" })
          const file = write(Path.join(dir, "conf.json"), {
            processes: 3,
            restart: "never",
            env: ["GREETING=file", "OTHER=file"],
            command: ["node", "-e", "console.log('the file command')"]
          })
          const p = yield* prefork(["--config", file, "-n", "1", "-e", "GREETING=cli", "--", ...printer(true)], { cwd })
          const { code } = yield* p.exit
          assert.strictEqual(code, 0, p.stderr())
          assert.deepStrictEqual(
            lines(p.stdout()).map((l) => l.replace(/^\[0:\d+\] /, "")),
            ["0 cli undefined"]
          )
          assert.include(p.stderr(), `Config file: ${file}`)
          // The file's restart: never still applies (no flag said otherwise): one start, no restart.
          assert.include(p.stderr(), "Every worker exited normally (0 restarts)")
        })
      )
  )

  it.live("--config off: a prefork.json in the working directory is not read", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const dir = yield* tempDir
        write(Path.join(dir, "prefork.json"), { bogus: true })
        const p = yield* prefork(["--config", "off", "-n", "1", "--", ...printer(true)], { cwd: dir })
        const { code } = yield* p.exit
        assert.strictEqual(code, 0, p.stderr())
        assert.notInclude(p.stderr(), "Config file")
      })
    )
  )

  describe("refused: exit 2, the file (and the key) named, nothing started", () => {
    const big = `{"processes": 1${" ".repeat(ConfigFile.MAX_BYTES)}}`
    const cases: ReadonlyArray<{
      readonly name: string
      readonly setup: (dir: string) => void
      readonly args?: ReadonlyArray<string>
      readonly message: string | RegExp
      readonly rootOnly?: boolean
    }> = [
      {
        name: "a bad value",
        setup: (dir) => write(Path.join(dir, "prefork.json"), { "max-restarts": "lots" }),
        message: `prefork: prefork.json: "max-restarts": expected a whole number, or infinity, got "lots"`
      },
      {
        name: "a bad item of a list",
        setup: (dir) => write(Path.join(dir, "prefork.json"), { env: ["GREETING=hi", "NOEQUALS"] }),
        message: `prefork: prefork.json: "env": item 2: expected KEY=VALUE, got "NOEQUALS"`
      },
      {
        name: "an unknown key, with the closest known one",
        setup: (dir) => write(Path.join(dir, "prefork.json"), { "max-restart": 3 }),
        message: `prefork: prefork.json: unknown key "max-restart" (did you mean "max-restarts"?)`
      },
      {
        name: "invalid JSON, with its line and column",
        setup: (dir) => write(Path.join(dir, "prefork.json"), `{\n  "processes": 2,\n  oops\n}\n`),
        message: /prefork: prefork\.json: invalid JSON: .*line 3 column 3/
      },
      {
        name: "a command that is not a list of strings",
        setup: (dir) => write(Path.join(dir, "prefork.json"), { command: "node app.js" }),
        message: `prefork: prefork.json: "command": expected a list of strings`
      },
      {
        name: "a symbolic link found by default",
        setup: (dir) => {
          write(Path.join(dir, "real.json"), { processes: 1 })
          symlinkSync(Path.join(dir, "real.json"), Path.join(dir, "prefork.json"))
        },
        message: "prefork: prefork.json: it is a symbolic link"
      },
      {
        name: "a group-writable file",
        setup: (dir) => write(Path.join(dir, "prefork.json"), { processes: 1 }, 0o664),
        message: "prefork: prefork.json: it is writable by its group (mode 0664)"
      },
      {
        name: "a world-writable file named by --config",
        setup: (dir) => write(Path.join(dir, "mine.json"), { processes: 1 }, 0o646),
        args: ["--config", "mine.json"],
        message: "prefork: mine.json: it is writable by others (mode 0646)"
      },
      {
        name: "a file owned by another user",
        setup: (dir) => chownSync(write(Path.join(dir, "prefork.json"), { processes: 1 }), nobody!, nobody!),
        message: `prefork: prefork.json: it belongs to uid ${nobody}, neither to prefork's uid 0 nor to root`,
        rootOnly: true
      },
      {
        name: "a file over 1 MiB",
        setup: (dir) => write(Path.join(dir, "prefork.json"), big),
        message: `prefork: prefork.json: it is ${big.length} bytes, more than the 1048576 allowed`
      },
      {
        name: "a directory",
        setup: (dir) => mkdirSync(Path.join(dir, "prefork.json")),
        message: "prefork: prefork.json: it is not a regular file"
      },
      {
        name: "a --config file that does not exist",
        setup: () => {},
        args: ["--config", "missing.json"],
        message: "prefork: missing.json: no such file"
      },
      {
        name: "no command anywhere",
        setup: (dir) => write(Path.join(dir, "prefork.json"), { processes: 1 }),
        message: "prefork: Missing required argument: command"
      }
    ]
    for (const c of cases) {
      it.live.skipIf(c.rootOnly === true && (!root || nobody === undefined))(c.name, () =>
        Effect.scoped(
          Effect.gen(function* () {
            const dir = yield* tempDir
            c.setup(dir)
            const command = c.name === "no command anywhere" ? [] : ["--", ...printer(true)]
            const p = yield* prefork([...(c.args ?? []), ...command], { cwd: dir })
            const { code } = yield* p.exit
            assert.strictEqual(code, 2, p.stderr())
            if (typeof c.message === "string") assert.include(p.stderr(), c.message)
            else assert.match(p.stderr(), c.message)
            assert.strictEqual(p.stdout(), "", "no worker started")
          })
        )
      )
    }
  })
})

/**
 * A validator for the JSON Schema keywords the generated schema uses: enough
 * to check that the schema accepts what prefork accepts and refuses typos.
 */
const validate = (schema: Options.JsonSchema, value: unknown, at = "$"): ReadonlyArray<string> => {
  const errors: Array<string> = []
  const typeOf = (v: unknown) =>
    Array.isArray(v) ? "array" : v === null ? "null" : Number.isInteger(v) ? "integer" : typeof v
  if (schema["type"] !== undefined) {
    const types = ([] as Array<unknown>).concat(schema["type"])
    const t = typeOf(value)
    if (!types.includes(t) && !(t === "integer" && types.includes("number"))) errors.push(`${at}: type ${t}`)
  }
  if (Array.isArray(schema["enum"]) && !schema["enum"].includes(value)) errors.push(`${at}: not in enum`)
  if (
    typeof schema["pattern"] === "string" &&
    typeof value === "string" &&
    !new RegExp(schema["pattern"]).test(value)
  ) {
    errors.push(`${at}: pattern`)
  }
  if (Array.isArray(schema["anyOf"])) {
    const all = (schema["anyOf"] as Array<Options.JsonSchema>).map((s) => validate(s, value, at))
    if (all.every((e) => e.length > 0)) errors.push(`${at}: no anyOf matched`)
  }
  if (Array.isArray(value)) {
    if (typeof schema["minItems"] === "number" && value.length < schema["minItems"]) errors.push(`${at}: minItems`)
    if (schema["items"] !== undefined) {
      value.forEach((v, i) => errors.push(...validate(schema["items"] as Options.JsonSchema, v, `${at}[${i}]`)))
    }
  }
  if (typeOf(value) === "object") {
    const properties = (schema["properties"] ?? {}) as Record<string, Options.JsonSchema>
    for (const [key, v] of Object.entries(value as object)) {
      const sub = properties[key] ?? schema["additionalProperties"]
      if (sub === false) errors.push(`${at}.${key}: not allowed`)
      else if (typeof sub === "object" && sub !== null)
        errors.push(...validate(sub as Options.JsonSchema, v, `${at}.${key}`))
    }
  }
  return errors
}

describe("the JSON Schema", () => {
  const committed = new URL("../../schema/prefork.schema.json", import.meta.url)

  it("schema/prefork.schema.json is what the options' definition makes now", () => {
    assert.deepStrictEqual(
      JSON.parse(readFileSync(committed, "utf8")),
      Options.schema(),
      "schema/prefork.schema.json is out of date: run `npm run schema` and commit it"
    )
  })

  it("has every option, described, and nothing else (draft 2020-12)", () => {
    const schema = Options.schema()
    assert.strictEqual(schema["$schema"], "https://json-schema.org/draft/2020-12/schema")
    assert.strictEqual(schema["additionalProperties"], false)
    const properties = schema["properties"] as Record<string, Options.JsonSchema>
    assert.deepStrictEqual(Object.keys(properties).sort(), ["$schema", "command", ...Options.byName.keys()].sort())
    for (const [key, property] of Object.entries(properties)) assert.isString(property["description"], key)
  })

  it("the example in docs/cli.md is valid, for the schema and for prefork", () => {
    const doc = readFileSync(new URL("../../docs/cli.md", import.meta.url), "utf8")
    const section = doc.slice(doc.indexOf("## Config file"))
    const example = JSON.parse(/```json\n([\s\S]*?)```/.exec(section)![1]!)
    assert.deepStrictEqual(validate(Options.schema(), example), [])
    assert.isTrue(Result.isSuccess(ConfigFile.decode(example)))
  })

  // Each sample: what the schema says, and what prefork says.
  const samples: ReadonlyArray<readonly [unknown, boolean]> = [
    [
      {
        $schema: "./node_modules/effect-prefork/schema/prefork.schema.json",
        processes: 4,
        restart: "always",
        "max-restarts": "infinity",
        intensity: "5/10s,per-worker",
        backoff: "100ms",
        "backoff-factor": 1.5,
        "max-memory": "512M",
        listen: ["8080", "unix:/run/app.sock"],
        cluster: false,
        env: { NODE_ENV: "production" },
        watch: "src",
        "log-format": "json",
        command: ["node", "server.js"]
      },
      true
    ],
    [{ env: ["A=1", "B=2"], "stop-timeout": "0", metrics: 9464 }, true],
    [{ "max-restart": 3 }, false],
    [{ restart: "sometimes" }, false],
    [{ backoff: "5" }, false],
    [{ cluster: "yes" }, false],
    [{ command: [] }, false],
    [{ listen: [8080] }, false]
  ]
  for (const [sample, valid] of samples) {
    it(`${valid ? "accepts" : "refuses"} ${JSON.stringify(sample).slice(0, 60)}, as prefork does`, () => {
      assert.deepStrictEqual(
        validate(Options.schema(), sample).length === 0,
        valid,
        String(validate(Options.schema(), sample))
      )
      assert.strictEqual(Result.isSuccess(ConfigFile.decode(sample)), valid)
    })
  }
})
