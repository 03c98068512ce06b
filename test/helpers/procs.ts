/**
 * Finding the processes a test started: every process of a test carries an
 * environment variable with a tag unique to the test, and the kernel's
 * `/proc/<pid>/environ` (fixed at exec time) says which processes have it.
 * Polling raw pids would be flaky (they are reused); tags are not.
 */
import { readdirSync, readFileSync } from "node:fs"
import { randomUUID } from "node:crypto"
import { Duration, Effect } from "effect"

export const TAG_VAR = "PREFORK_TEST_TAG"

/** A fresh tag, and the env to give the supervisor so every worker carries it. */
export const makeTag = () => {
  const tag = randomUUID()
  return { tag, env: { [TAG_VAR]: tag } }
}

/** The pids of live (non-zombie) processes whose environment carries the tag. */
export const pidsWithTag = (tag: string): Array<number> => {
  const needle = `${TAG_VAR}=${tag}`
  const found: Array<number> = []
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue
    const pid = Number(entry)
    if (pid === process.pid) continue
    try {
      const environ = readFileSync(`/proc/${pid}/environ`, "latin1")
      if (!environ.split("\0").includes(needle)) continue
      const stat = readFileSync(`/proc/${pid}/stat`, "latin1")
      const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3)
      if (state !== "Z" && state !== "X") found.push(pid)
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return found
}

/**
 * Fails unless no process carries the tag, waiting up to `within` for exits
 * already under way (bounded: 50 polls at most).
 */
export const assertNoneLeft = (tag: string, within: Duration.Input = "2 seconds") =>
  Effect.gen(function* () {
    const deadline = Date.now() + Duration.toMillis(Duration.fromInputUnsafe(within))
    for (let i = 0; i < 50; i++) {
      let left = pidsWithTag(tag)
      if (left.length === 0) {
        // Confirm: a process caught in the middle of an exec can briefly show no environment.
        yield* Effect.sleep(30)
        left = pidsWithTag(tag)
        if (left.length === 0) return
      }
      if (Date.now() > deadline || i === 49) {
        for (const pid of left) {
          try {
            process.kill(pid, "SIGKILL")
          } catch {
            // already gone
          }
        }
        return yield* Effect.die(new Error(`processes left behind by the test: ${left.join(", ")}`))
      }
      yield* Effect.sleep(Math.max(20, Duration.toMillis(Duration.fromInputUnsafe(within)) / 40))
    }
  })

/** Waits (up to `within`, bounded polls) until `check` holds. */
export const eventually = <A>(check: () => A | undefined, within: Duration.Input = "5 seconds") =>
  Effect.gen(function* () {
    const deadline = Date.now() + Duration.toMillis(Duration.fromInputUnsafe(within))
    for (let i = 0; i < 1000; i++) {
      const value = check()
      if (value !== undefined) return value
      if (Date.now() > deadline) break
      yield* Effect.sleep(10)
    }
    return yield* Effect.die(new Error("condition not met in time"))
  })
