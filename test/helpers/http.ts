/**
 * HTTP on 127.0.0.1 for the tests of owned sockets: one GET on a fresh
 * connection whose answer is the fd-server fixtures' JSON, and a port held
 * busy for the length of a scope.
 */
import { request } from "node:http"
import * as Net from "node:net"
import { Effect } from "effect"
import type * as Scope from "effect/Scope"
import type * as Listen from "../../src/Listen.ts"

/** What the fd-server fixtures answer. */
export interface FdAnswer {
  readonly task: string
  readonly pid: number
  readonly listenPid: string
  readonly names?: string
  readonly lang?: string
}

export type Answered = FdAnswer | { readonly error: string }

/** One GET on a fresh connection, bounded in time: the answer's JSON, or the connection error's code. */
export const getJson = (target: { readonly port: number } | { readonly socketPath: string }, path = "/") =>
  Effect.callback<Answered>((resume) => {
    const req = request({ ...target, host: "127.0.0.1", path, agent: false, timeout: 10_000 }, (res) => {
      let body = ""
      res.setEncoding("utf8")
      res.on("data", (chunk: string) => (body += chunk))
      res.on("end", () => resume(Effect.succeed(JSON.parse(body) as FdAnswer)))
    })
    req.on("timeout", () => req.destroy(Object.assign(new Error("timeout"), { code: "ETIMEDOUT" })))
    req.on("error", (error: NodeJS.ErrnoException) => resume(Effect.succeed({ error: error.code ?? error.message })))
    req.end()
  })

/** The answer, or a test failure naming the connection error. */
export const answered = (a: Answered): FdAnswer => {
  if ("error" in a) throw new Error(`request failed: ${a.error}`)
  return a
}

/** A port on 127.0.0.1 that another server listens on while the scope lasts. */
export const busyPort: Effect.Effect<number, never, Scope.Scope> = Effect.map(
  Effect.acquireRelease(
    Effect.callback<Net.Server>((resume) => {
      const server = Net.createServer()
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
    }),
    (server) => Effect.callback<void>((resume) => void server.close(() => resume(Effect.void)))
  ),
  (server) => (server.address() as Net.AddressInfo).port
)

/** The port of the supervisor's `i`-th socket, a TCP one. */
export const tcpPort = (sockets: ReadonlyArray<Listen.Socket>, i = 0): number => {
  const address = sockets[i]!.address
  if (address._tag !== "Tcp") throw new Error("expected a TCP socket")
  return address.port
}
