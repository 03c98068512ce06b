/**
 * The HTTP drain through the library (`Supervisor`, real processes): a worker
 * with no HTTP server dies of SIGTERM exactly as without the drain, in
 * command and module modes; a module worker with sockets is ready when it
 * listens; `drain: false` gives back Node's default.
 */
import { request } from "node:http"
import * as Path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Scope } from "effect"
import * as Supervisor from "../../src/Supervisor.ts"
import { tcpPort } from "../helpers/http.ts"
import { assertNoneLeft, eventually } from "../helpers/procs.ts"
import { exitedEvents, fixture, started, supervise, tempDir } from "../helpers/supervise.ts"

/** One GET on a fresh connection: the status, or the error's code. */
const get = (port: number, path: string) =>
  Effect.callback<number | string>((resume) => {
    const req = request({ host: "127.0.0.1", port, path, agent: false, timeout: 10_000 }, (res) => {
      res.resume()
      res.on("end", () => resume(Effect.succeed(res.statusCode ?? 0)))
    })
    req.on("timeout", () => req.destroy(Object.assign(new Error("timeout"), { code: "ETIMEDOUT" })))
    req.on("error", (error: NodeJS.ErrnoException) => resume(Effect.succeed(error.code ?? error.message)))
    req.end()
  })

describe("the HTTP drain through the library (real processes)", () => {
  for (const mode of ["command", "module"] as const) {
    it.live(`${mode} mode: a worker with no HTTP server still dies of SIGTERM`, () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const scope = yield* Scope.make()
          const options = { processes: 1, env: { DRAIN_LOG: Path.join(dir, "log") } }
          const { events, handle, tag } = yield* Scope.provide(scope)(
            supervise(
              mode === "module"
                ? { ...options, mode, command: fixture("drain/no-server.js") }
                : { ...options, command: process.execPath, args: [fixture("drain/no-server.js")] }
            )
          )
          yield* eventually(() => (started(events).length === 1 ? true : undefined))
          yield* Effect.sleep(300)
          yield* handle.stop
          const exited = yield* eventually(() => exitedEvents(events)[0])
          yield* Scope.close(scope, Exit.void)
          assert.strictEqual(exited?.status._tag === "Signaled" ? exited.status.signal : undefined, "SIGTERM")
          yield* assertNoneLeft(tag)
        })
      )
    )
  }

  for (const drain of [true, false]) {
    it.live(
      `module mode with sockets, drain: ${drain}: a request in flight at the stop is ${drain ? "answered" : "lost"}`,
      () =>
        Effect.gen(function* () {
          const scope = yield* Scope.make()
          const { events, handle, tag } = yield* Scope.provide(scope)(
            supervise({
              processes: 1,
              mode: "module",
              command: fixture("drain/fd-slow.js"),
              listen: ["127.0.0.1:0"],
              drain,
              ...(drain ? {} : { ready: "spawn" as const })
            })
          )
          // With the drain the worker is ready once it listens (the default readiness with sockets).
          yield* handle.awaitReady
          const port = tcpPort(handle.sockets)
          assert.strictEqual(yield* get(port, "/?ms=0"), 200)
          const slow = yield* Effect.forkChild(get(port, "/?ms=800"))
          yield* Effect.sleep(200)
          yield* handle.stop
          const answer = yield* Fiber.join(slow)
          if (drain) assert.strictEqual(answer, 200)
          else assert.isString(answer)
          const status = (yield* eventually(() => exitedEvents(events)[0])).status
          assert.strictEqual(status._tag === "Signaled" ? status.signal : undefined, "SIGTERM", JSON.stringify(status))
          yield* Scope.close(scope, Exit.void)
          yield* assertNoneLeft(tag)
        })
    )
  }

  it.effect("ready: listening in module mode needs the drain", () =>
    Effect.gen(function* () {
      const exit = yield* Effect.exit(
        Supervisor.config({ command: "x.js", mode: "module", ready: "listening", drain: false })
      )
      assert.isTrue(Exit.isFailure(exit))
    })
  )
})
