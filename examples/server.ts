/**
 * `npm start`: Tornado's fork_processes pattern, live. One HTTP worker per CPU
 * on 127.0.0.1 (port from PORT, default 8080), all sharing the port. Each
 * answers with its task id and pid. Make one die and watch the primary log it
 * and start a new worker with the same task id:
 *
 *   curl http://127.0.0.1:8080/             # task 1 (pid 4242)
 *   curl http://127.0.0.1:8080/exit/3       # exits with status 3: restarted
 *   curl http://127.0.0.1:8080/kill/SIGKILL # killed by signal 9: restarted
 *   curl http://127.0.0.1:8080/exit/0       # exits normally: not restarted
 *
 * Ctrl-C stops every worker gracefully, once.
 */
import { createServer } from "node:http"
import { constants } from "node:os"
import { Effect, Option } from "effect"
import { forkProcesses, runMain } from "../src/node/Prefork.ts"
import type { TaskId } from "../src/TaskId.ts"

const port = Number(process.env.PORT ?? 8080)

const serve = (id: TaskId) =>
  Effect.callback<never>(() => {
    const server = createServer((req, res) => {
      const [, action, arg] = (req.url ?? "/").split("/")
      if (action === "exit") {
        res.end(`task ${id} (pid ${process.pid}) exiting with status ${Number(arg)}\n`, () => process.exit(Number(arg)))
      } else if (action === "kill" && arg !== undefined && arg in constants.signals) {
        res.end(`task ${id} (pid ${process.pid}) killing itself with ${arg}\n`, () =>
          process.kill(process.pid, arg as NodeJS.Signals)
        )
      } else {
        res.end(`task ${id} (pid ${process.pid})\n`)
      }
    })
    server.listen(port, "127.0.0.1")
    return Effect.sync(() => server.close())
  })

const program = Effect.gen(function* () {
  const id = yield* forkProcesses(undefined, { maxRestarts: 100 })
  if (Option.isNone(id)) {
    return yield* Effect.log("every worker exited normally")
  }
  yield* serve(id.value)
})

runMain(program)
