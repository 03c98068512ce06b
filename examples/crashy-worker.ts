/**
 * A worker for the demo: it says hello with its task id and pid, works for a
 * random while, then ends in one of the ways Tornado tells apart: exits with
 * a status, is killed by a signal, or (rarely) exits normally.
 */
import { Effect, Option, Random } from "effect"
import * as Worker from "../src/Worker.ts"

const program = Effect.gen(function* () {
  const id = Option.getOrElse(yield* Worker.taskId, () => -1)
  console.log(`  worker: task ${id} (pid ${process.pid}) up`)
  yield* Effect.sleep(yield* Random.nextBetween(600, 2500))
  const fate = yield* Random.nextBetween(0, 1)
  if (fate < 0.45) {
    console.log(`  worker: task ${id} (pid ${process.pid}) crashing with status 3`)
    process.exit(3)
  } else if (fate < 0.9) {
    console.log(`  worker: task ${id} (pid ${process.pid}) killing itself with SIGKILL`)
    process.kill(process.pid, "SIGKILL")
  } else {
    console.log(`  worker: task ${id} (pid ${process.pid}) done, exiting normally`)
    process.exit(0)
  }
})

Effect.runFork(program)
