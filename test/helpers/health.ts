/**
 * For the tests of `--health` and `--shutdown-delay`: probes of a health
 * endpoint (`/livez`, `/readyz`, `/startupz`) on 127.0.0.1 as a kubelet sends
 * them (one request on a fresh connection, bounded in time), the workers of
 * a prefork that still run, and the order of a shutdown delay's log lines.
 */
import { readFileSync } from "node:fs"
import * as Net from "node:net"
import { assert } from "@effect/vitest"
import { Effect } from "effect"
import { pidsWithTag } from "./procs.ts"

export interface Probed {
  /** The status code, or 0 when there was no answer (`error` says why). */
  readonly status: number
  readonly body: string
  readonly error?: string
}

/** One request (`GET` unless told) for `path` on a fresh connection; at most `timeoutMs` (default 5 s). */
export const probe = (port: number, path: string, method = "GET", timeoutMs = 5_000) =>
  Effect.callback<Probed>((resume) => {
    let got = ""
    let done = false
    const finish = (error?: string) => {
      if (done) return
      done = true
      clearTimeout(timer)
      socket.destroy()
      const m = /^HTTP\/1\.1 (\d{3}) /.exec(got)
      const split = got.indexOf("\r\n\r\n")
      resume(
        Effect.succeed(
          m === null
            ? { status: 0, body: "", error: error ?? "no answer" }
            : { status: Number(m[1]), body: split === -1 ? "" : got.slice(split + 4) }
        )
      )
    }
    const socket = Net.connect({ host: "127.0.0.1", port }, () =>
      socket.write(`${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: kube-probe/1.31\r\n\r\n`)
    )
    const timer = setTimeout(() => finish("timeout"), timeoutMs)
    socket.setEncoding("latin1")
    socket.on("data", (chunk: string) => (got += chunk))
    socket.on("error", (error: NodeJS.ErrnoException) => finish(error.code ?? error.message))
    socket.on("close", () => finish())
  })

/** Probes `path` until it answers `status`: at most 500 probes and 10 s. */
export const probeUntil = (port: number, path: string, status: number) =>
  Effect.gen(function* () {
    const deadline = Date.now() + 10_000
    for (let i = 0; i < 500 && Date.now() < deadline; i++) {
      const answer = yield* probe(port, path)
      if (answer.status === status) return answer
      yield* Effect.sleep(10)
    }
    return yield* Effect.die(new Error(`${path} never answered ${status}`))
  })

/** The processes carrying `tag` that run `script` now, but `supervisor` (whose command line names it too). */
export const running = (tag: string, supervisor: number, script: string): Array<number> =>
  pidsWithTag(tag).filter((pid) => {
    if (pid === supervisor) return false
    try {
      return readFileSync(`/proc/${pid}/cmdline`, "latin1").includes(script)
    } catch {
      return false
    }
  })

/** Fails unless prefork's log says, in this order: the signal, the delay's start and end, then the workers' stop. */
export const assertDelayLogged = (log: string, signal: string, delay: string, workers: number) => {
  const lines = [
    `${signal} received: stopping after the shutdown delay`,
    `Shutdown delay: workers serve ${delay} more`,
    "Shutdown delay over: stopping the workers",
    `Stopping ${workers} processes`
  ].map((line) => log.indexOf(line))
  assert.notInclude(lines, -1, log)
  assert.deepStrictEqual(
    [...lines].sort((a, b) => a - b),
    lines,
    log
  )
}
