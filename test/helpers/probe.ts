/**
 * Probes of a health endpoint (`/livez`, `/readyz`, `/startupz`) on
 * 127.0.0.1, as a kubelet sends them: one request on a fresh connection,
 * bounded in time, its status and body; or the connection error's code.
 */
import * as Net from "node:net"
import { Effect } from "effect"

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
