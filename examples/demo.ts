/**
 * `npm run demo:crash`: four supervised workers that crash now and then. Watch the
 * Tornado log lines, the same task id coming back with a new pid, and the
 * supervisor giving up once its budget of 8 restarts is spent — after it has
 * stopped every remaining worker.
 */
import { fileURLToPath } from "node:url"
import { NodeRuntime } from "@effect/platform-node"
import { Effect } from "effect"
import { describe } from "../src/ExitStatus.ts"
import * as NodeProcessSpawner from "../src/node/NodeProcessSpawner.ts"
import * as Supervisor from "../src/Supervisor.ts"

const worker = fileURLToPath(new URL("./crashy-worker.ts", import.meta.url))

const program = Supervisor.run({
  processes: 4,
  mode: "module",
  command: worker,
  maxRestarts: 8,
  stopTimeout: "2 seconds"
}).pipe(
  Effect.tap((summary) => Effect.log(`all workers exited normally after ${summary.restarts} restarts`)),
  Effect.catchTag("TooManyRestarts", (error) =>
    Effect.gen(function* () {
      yield* Effect.logError(error.message)
      yield* Effect.log("every worker was stopped before giving up; the abnormal exits were:")
      for (const exit of error.exits) {
        yield* Effect.log(`  child ${exit.taskId} (pid ${exit.pid}) ${describe(exit.status)}`)
      }
    })
  ),
  Effect.provide(NodeProcessSpawner.layer)
)

NodeRuntime.runMain(program)
