/**
 * `--log-format json` and `logfmt`: every line prefork writes is one record,
 * workers' output included, with one set of key names (`taskId`, `pid`).
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { prefork, stderrHas } from "./prefork.ts"

const WORKER =
  'console.log("to stdout, with = and \\"quotes\\""); console.error("to stderr"); setInterval(() => {}, 1 << 30)'

const lines = (text: string) => text.split("\n").filter((l) => l.length > 0)

describe("prefork --log-format (real processes)", () => {
  it.live("json: worker lines are records on their own stream; status records say taskId, as the others do", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const p = yield* prefork(["-n", "1", "--log-format", "json", "--", "node", "-e", WORKER])
        yield* stderrHas(p, "to stderr")
        p.signal("SIGUSR2")
        yield* stderrHas(p, '"message":"status"')
        p.signal("SIGTERM")
        assert.strictEqual((yield* p.exit).code, 0, p.stderr())
        // Every line of both streams parses as a record.
        const out = lines(p.stdout()).map((l) => JSON.parse(l))
        const err = lines(p.stderr()).map((l) => JSON.parse(l))
        const said = out.find((r) => String(r.message).startsWith("to stdout"))
        assert.strictEqual(said.message, 'to stdout, with = and "quotes"')
        assert.deepInclude(said.annotations, { taskId: 0, stream: "stdout" })
        assert.isNumber(said.annotations.pid)
        assert.isString(said.timestamp)
        const toErr = err.find((r) => r.message === "to stderr")
        assert.deepInclude(toErr.annotations, { taskId: 0, stream: "stderr", pid: said.annotations.pid })
        const status = err.find((r) => r.message === "status")
        assert.deepInclude(status.annotations, { taskId: 0, pid: said.annotations.pid, state: "running" })
        assert.notProperty(status.annotations, "task")
      })
    )
  )

  it.live("logfmt: worker lines are logfmt records with taskId, pid and stream", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const p = yield* prefork(["-n", "1", "--log-format", "logfmt", "--", "node", "-e", WORKER])
        yield* stderrHas(p, "to stderr")
        p.signal("SIGTERM")
        assert.strictEqual((yield* p.exit).code, 0, p.stderr())
        const out = lines(p.stdout())
        assert.strictEqual(out.length, 1)
        assert.match(
          out[0]!,
          /^timestamp=\S+ level=INFO message="to stdout, with = and \\"quotes\\"" taskId=0 pid=\d+ stream=stdout$/
        )
        assert.isTrue(
          lines(p.stderr()).every((l) => /^timestamp=\S+ level=\w+ /.test(l)),
          p.stderr()
        )
      })
    )
  )
})
