/**
 * Issue 18 item 7: a worker's own records stay records. Under `--log-format
 * json` a pino line is one JSON object with the worker's keys as they were and
 * prefork's under `prefork`; under `logfmt` a logfmt line gets prefork's keys
 * before it; anything else (plain, malformed, an array, too long, with a
 * `prefork` key of its own) is quoted as `message`, as before.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Output from "../../src/cli/Output.ts"
import * as Structured from "../../src/cli/Structured.ts"
import type { OutputLine } from "../../src/ProcessSpawner.ts"
import type { TaskId } from "../../src/TaskId.ts"
import { fixture, prefork, stderrHas } from "./prefork.ts"

const lines = (text: string) => text.split("\n").filter((l) => l.length > 0)

const at = (line: string): OutputLine => ({ taskId: 2 as TaskId, pid: 77, stream: "stdout", line })

describe("worker records under --log-format (real processes)", () => {
  it.live("json: pino lines stay objects with prefork's fields added; the rest are messages", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const p = yield* prefork(["-n", "1", "--log-format", "json", "--", "node", fixture("pino-lines.js")])
        yield* stderrHas(p, '"message":"done"')
        p.signal("SIGTERM")
        assert.strictEqual((yield* p.exit).code, 0, p.stderr())
        // Every line parses as one JSON object.
        const out = lines(p.stdout()).map((l) => JSON.parse(l))
        assert.strictEqual(out.length, 9, p.stdout().slice(0, 2000))
        const [listening, slow, plain, malformed, array, huge, own, logfmt, empty] = out
        assert.deepInclude(listening, { level: 30, msg: "listening", port: 8080, hostname: "h" })
        // The worker's pid stays its own key; prefork's fields are under `prefork`.
        assert.deepStrictEqual(listening.prefork, { taskId: 0, pid: listening.pid, stream: "stdout" })
        assert.notProperty(listening, "message")
        assert.deepStrictEqual(slow.req, { id: 1, url: "/a" })
        // The worker's text is kept as written: a number JavaScript cannot hold exactly is not rounded by prefork.
        assert.include(p.stdout(), '"big":12345678901234567890,"prefork"')
        assert.strictEqual(plain.message, "plain text line")
        assert.deepStrictEqual(plain.annotations, { taskId: 0, pid: listening.pid, stream: "stdout" })
        assert.strictEqual(malformed.message, '{"msg": "malformed", ')
        assert.strictEqual(array.message, "[1,2,3]")
        assert.strictEqual(huge.message.length, 200_023)
        assert.strictEqual(own.message, '{"msg":"has its own","prefork":1}')
        assert.strictEqual(logfmt.message, 'level=info msg="a logfmt line" port=8080')
        assert.deepStrictEqual(empty, { prefork: { taskId: 0, pid: listening.pid, stream: "stdout" } })
      })
    )
  )

  it.live("logfmt: a logfmt line gets prefork's keys before it; a JSON or plain line is a message", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const p = yield* prefork(["-n", "1", "--log-format", "logfmt", "--", "node", fixture("pino-lines.js")])
        yield* stderrHas(p, "message=done")
        p.signal("SIGTERM")
        assert.strictEqual((yield* p.exit).code, 0, p.stderr())
        const out = lines(p.stdout())
        assert.strictEqual(out.length, 9, p.stdout().slice(0, 3000))
        assert.match(
          out[7]!,
          /^prefork\.taskId=0 prefork\.pid=\d+ prefork\.stream=stdout level=info msg="a logfmt line" port=8080$/
        )
        assert.match(out[2]!, /^timestamp=\S+ level=INFO message="plain text line" taskId=0 pid=\d+ stream=stdout$/)
        assert.match(out[0]!, /^timestamp=\S+ level=INFO message="\{\\"level\\":30,/)
      })
    )
  )
})

describe("Structured (what is a record)", () => {
  it("only a line starting with { is parsed; the merge keeps the worker's text and keys", () => {
    assert.strictEqual(
      Structured.json(at(' {"a":1,"pid":5} ')),
      '{"a":1,"pid":5,"prefork":{"taskId":2,"pid":77,"stream":"stdout"}}'
    )
    assert.strictEqual(Structured.json(at("{ }")), '{ "prefork":{"taskId":2,"pid":77,"stream":"stdout"}}')
    for (const line of ["", "{", "}", "{a}", '"{}"', "[{}]", '{"a":1}x', '{"prefork":{}}', "{".repeat(100_000)]) {
      assert.isUndefined(Structured.json(at(line)), line.slice(0, 20))
    }
    assert.isUndefined(Structured.json(at(`{"a":"${"x".repeat(Structured.MAX_LENGTH)}"}`)))
    const spare = Structured.json({ ...at('{"a":1}'), spare: true })
    assert.deepStrictEqual(JSON.parse(spare!).prefork, { spare: true, pid: 77, stream: "stdout" })
  })

  it("logfmt: whole key=value lines only", () => {
    assert.strictEqual(
      Structured.logfmt(at('a=1 b="x y" c=')),
      'prefork.taskId=2 prefork.pid=77 prefork.stream=stdout a=1 b="x y" c='
    )
    for (const line of ["", "plain text", "a=1 plain", 'a="unterminated', "=1", '{"a":1}']) {
      assert.isUndefined(Structured.logfmt(at(line)), line)
    }
    // A long line that almost matches is rejected without backtracking for long.
    assert.isUndefined(Structured.logfmt(at(`${"a=b ".repeat(10_000)}x`)))
  })

  it("Output.make under json writes the merged object, under pretty the prefix", () => {
    const written: Array<string> = []
    const stream = { write: (t: string) => written.push(t), on: () => undefined }
    const line = at('{"msg":"hi"}')
    void Output.make({ stdout: stream, stderr: stream, env: {}, format: "json" })(line)
    void Output.make({ stdout: stream, stderr: stream, env: {}, format: "pretty" })(line)
    assert.deepStrictEqual(written, [
      '{"msg":"hi","prefork":{"taskId":2,"pid":77,"stream":"stdout"}}\n',
      '[2:77] {"msg":"hi"}\n'
    ])
  })
})
