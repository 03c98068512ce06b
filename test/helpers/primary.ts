/**
 * A supervisor in a process of its own, for the faults that need one (the
 * primary SIGKILLed, Ctrl-C to its process group, SIGTERM, a tiny fd limit),
 * and small HTTP helpers for cluster-mode servers on 127.0.0.1.
 *
 * The primary carries the test's tag in its environment, and every worker it
 * starts inherits it, so `assertNoneLeft(tag)` covers the primary and all of
 * its workers.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { readdirSync } from "node:fs"
import { request as httpRequest } from "node:http"
import { createServer } from "node:net"
import { Deferred, Duration, Effect, Layer, Option, Stream } from "effect"
import type * as Scope from "effect/Scope"
import * as NodeProcessSpawner from "../../src/node/NodeProcessSpawner.ts"
import * as Supervisor from "../../src/Supervisor.ts"
import { eventually, makeTag, pidsWithTag } from "./procs.ts"
import { fixture, quiet, supervise } from "./supervise.ts"

/** One event line printed by `fixtures/primary.ts`: `EVENT {"_tag":…,"taskId":…,"pid":…,…}`. */
export interface PrimaryEvent {
  readonly _tag: "Started" | "Ready" | "Exited" | "Finished"
  readonly taskId?: number
  readonly pid?: number
  /** The primary's clock, epoch ms. */
  readonly at: number
  readonly restart?: boolean
  readonly notReady?: boolean
  readonly status?:
    | { readonly _tag: "Exited"; readonly code: number }
    | {
        readonly _tag: "Signaled"
        readonly signal: string
      }
}

export interface PrimaryExit {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
}

export interface Primary {
  readonly child: ChildProcess
  readonly pid: number
  readonly tag: string
  /** Every line the primary wrote, stdout and stderr interleaved as they arrived. */
  readonly lines: Array<string>
  /** The `EVENT` lines, parsed. */
  readonly events: () => Array<PrimaryEvent>
  /** Waits until the primary has exited. */
  readonly exit: Effect.Effect<PrimaryExit>
  /** The exit if the primary has exited. */
  readonly exited: () => PrimaryExit | undefined
}

export interface PrimaryOptions {
  /** Start the primary as the leader of a new process group (and session), as a terminal does. */
  readonly detached?: boolean | undefined
  /** Run the primary under `sh -c 'ulimit -n <n>; exec node …'`. */
  readonly ulimitNofile?: number | undefined
  readonly env?: Readonly<Record<string, string>> | undefined
  /** A command that runs node in turn, such as `["systemd-socket-activate", "-l", "127.0.0.1:8080"]`. */
  readonly prefix?: ReadonlyArray<string> | undefined
}

const collectLines = (stream: NodeJS.ReadableStream | null, into: Array<string>) => {
  if (stream === null) return
  let pending = ""
  stream.setEncoding?.("utf8")
  stream.on("data", (chunk: string) => {
    const text = pending + chunk
    const parts = text.split("\n")
    pending = parts.pop() ?? ""
    into.push(...parts)
  })
  stream.on("end", () => {
    if (pending.length > 0) into.push(pending)
    pending = ""
  })
}

/**
 * Starts `node <fixture> ...args` (the project's Node 24) as a separate
 * primary, tagged. Closing the scope SIGKILLs it (its whole group when
 * detached) if it is still running, and waits (bounded) for its exit.
 */
export const spawnPrimary = (
  name: string,
  args: ReadonlyArray<string>,
  options: PrimaryOptions = {}
): Effect.Effect<Primary, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const { env, tag } = makeTag()
      const script = [fixture(name), ...args]
      const [file, argv] =
        options.prefix !== undefined
          ? ([options.prefix[0]!, [...options.prefix.slice(1), process.execPath, ...script]] as const)
          : options.ulimitNofile === undefined
            ? ([process.execPath, script] as const)
            : ([
                "/bin/sh",
                ["-c", `ulimit -n ${options.ulimitNofile} && exec "$0" "$@"`, process.execPath, ...script]
              ] as const)
      const child = spawn(file, [...argv], {
        env: { ...process.env, ...options.env, ...env },
        stdio: ["ignore", "pipe", "pipe"],
        detached: options.detached === true
      })
      const lines: Array<string> = []
      collectLines(child.stdout, lines)
      collectLines(child.stderr, lines)
      const done = Deferred.makeUnsafe<PrimaryExit>()
      let result: PrimaryExit | undefined
      child.once("exit", (code, signal) => {
        result = { code, signal }
        Deferred.doneUnsafe(done, Effect.succeed(result))
      })
      const events = () =>
        lines.filter((l) => l.startsWith("EVENT ")).map((l) => JSON.parse(l.slice(6)) as PrimaryEvent)
      return {
        child,
        pid: child.pid!,
        tag,
        lines,
        events,
        exit: Deferred.await(done),
        exited: () => result
      } satisfies Primary
    }),
    (primary) =>
      Effect.gen(function* () {
        if (primary.exited() === undefined) {
          try {
            if (options.detached === true) process.kill(-primary.pid, "SIGKILL")
            else primary.child.kill("SIGKILL")
          } catch {
            // gone meanwhile
          }
          yield* Effect.timeoutOption(primary.exit, "3 seconds")
        }
        // A test that failed half-way may have left workers behind: end them (the test has failed already).
        for (const pid of pidsWithTag(primary.tag)) {
          try {
            process.kill(pid, "SIGKILL")
          } catch {
            // gone meanwhile
          }
        }
      })
  )

/** Waits (bounded) for a line of the primary's output that matches. */
export const waitLine = (primary: Primary, match: RegExp, within: Duration.Input = "10 seconds") =>
  eventually(() => primary.lines.find((l) => match.test(l)), within)

/** Waits (bounded) until the primary has printed `n` `Started` events; returns them. */
export const waitStarted = (primary: Primary, n: number, within: Duration.Input = "10 seconds") =>
  eventually(() => {
    const started = primary.events().filter((e) => e._tag === "Started")
    return started.length >= n ? started : undefined
  }, within)

/** Waits for the primary to exit, failing the test if it takes longer than `within`. */
export const awaitExit = (primary: Primary, within: Duration.Input = "10 seconds") =>
  Effect.flatMap(Effect.timeoutOption(primary.exit, within), (exit) =>
    Option.isSome(exit)
      ? Effect.succeed(exit.value)
      : Effect.die(
          new Error(
            `primary ${primary.pid} still running after ${Duration.format(Duration.fromInputUnsafe(within))}:\n${primary.lines.join("\n")}`
          )
        )
  )

/** Files in `dir` whose name starts with `prefix`. */
export const filesStartingWith = (dir: string, prefix: string): Array<string> =>
  readdirSync(dir).filter((f) => f.startsWith(prefix))

/** A port on 127.0.0.1 that was free a moment ago (listen on 0, read it, close). */
export const freePort: Effect.Effect<number> = Effect.callback<number>((resume) => {
  const server = createServer()
  server.listen(0, "127.0.0.1", () => {
    const address = server.address()
    const port = typeof address === "object" && address !== null ? address.port : 0
    server.close(() => resume(Effect.succeed(port)))
  })
})

export interface HttpResult {
  readonly status: number
  readonly body: string
}

/**
 * One GET to 127.0.0.1 on a fresh connection (no agent, no keep-alive), as a
 * promise that never rejects: `undefined` on any error or after `timeoutMs`.
 */
export const getPromise = (port: number, path: string, timeoutMs = 2000): Promise<HttpResult | undefined> =>
  new Promise((resolve) => {
    let settled = false
    const settle = (value: HttpResult | undefined) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      resolve(value)
    }
    const req = httpRequest(
      { host: "127.0.0.1", port, path, agent: false, headers: { connection: "close" } },
      (res) => {
        let body = ""
        res.setEncoding("utf8")
        res.on("data", (chunk: string) => (body += chunk))
        res.on("end", () => settle({ status: res.statusCode ?? 0, body }))
        res.on("error", () => settle(undefined))
      }
    )
    const timer = setTimeout(() => {
      req.destroy()
      settle(undefined)
    }, timeoutMs)
    req.on("error", () => settle(undefined))
    req.end()
  })

/** {@link getPromise} as an effect: `Option.none()` on any error. */
export const get = (port: number, path: string, timeoutMs = 2000): Effect.Effect<Option.Option<HttpResult>> =>
  Effect.map(
    Effect.promise(() => getPromise(port, path, timeoutMs)),
    Option.fromUndefinedOr
  )

/** What the HTTP fixtures answer. */
export interface Answer {
  readonly task: string
  readonly pid: number
  readonly workerId: number | null
}

/** A GET that must answer with the fixtures' JSON; `Option.none()` otherwise. */
export const ask = (port: number, path = "/"): Effect.Effect<Option.Option<Answer>> =>
  Effect.map(get(port, path), (r) =>
    Option.flatMap(r, (res) => {
      try {
        return res.status === 200 ? Option.some(JSON.parse(res.body) as Answer) : Option.none()
      } catch {
        return Option.none()
      }
    })
  )

/** Waits (bounded: about 50 tries) until a GET on the port is answered. */
export const waitHttp = (port: number, within: Duration.Input = "10 seconds") =>
  Effect.gen(function* () {
    const deadline = Date.now() + Duration.toMillis(Duration.fromInputUnsafe(within))
    for (let i = 0; i < 200; i++) {
      const answer = yield* ask(port)
      if (Option.isSome(answer)) return answer.value
      if (Date.now() > deadline) break
      yield* Effect.sleep(50)
    }
    return yield* Effect.die(new Error(`nothing answered on 127.0.0.1:${port} in time`))
  })

/** How many file descriptors a process has open (`/proc/<pid>/fd`). */
export const fdCount = (pid: number | "self" = "self"): number => readdirSync(`/proc/${pid}/fd`).length

/**
 * Starts a supervisor over a fixture script in the current scope (cluster
 * mode: the script is the worker; module mode: the module), as
 * `superviseNode` does for `node <fixture>` commands.
 */
export const superviseScript = (
  name: string,
  args: ReadonlyArray<string>,
  options: Omit<Supervisor.Options, "command" | "args">,
  logs: Layer.Layer<never> = quiet
) => supervise({ ...options, command: fixture(name), args }, logs)

export const readyEvents = (events: ReadonlyArray<Supervisor.Event>) =>
  events.filter((e): e is Extract<Supervisor.Event, { _tag: "Ready" }> => e._tag === "Ready")
