/**
 * What a restart allocates in the primary: `Supervisor.start` (the package
 * compiled to JavaScript, as bench/churn.ts runs it) supervising 2 workers
 * of `/bin/false` in command mode with no restart delay and no limit, under
 * V8's sampling heap profiler with the objects that garbage collection has
 * already freed kept in the samples: every allocation counts, not only what
 * survives. Reported: the bytes allocated per restart, by function and by
 * file (the sampled sizes, scaled), over `--seconds` after 1 s of warm-up.
 *
 * The supervisor runs in this process (the profiler is the inspector's);
 * its log goes to a discarding logger at level info (formatted, then
 * dropped), so what the supervisor formats is counted and nothing is written.
 *
 *   node bench/churn-alloc.ts [--dist=bench/.scratch/dist] [--seconds=5] [--top=25] [--interval=4096] [--quick]
 */
import * as Inspector from "node:inspector/promises"
import type * as EffectType from "effect/Effect"
import * as Path from "node:path"
import { buildOurs, fmt, num, OURS_DIST, out, requireNode, ROOT, sleep, str, watchdog } from "./lib/common.ts"

requireNode()
const seconds = num("seconds", 5, 2)
const top = num("top", 25, 10)
const interval = num("interval", 4096, 4096)
const dist = Path.resolve(ROOT, str("dist", ""))
watchdog(120)
if (str("dist", "") === "") await buildOurs()
const from = str("dist", "") === "" ? OURS_DIST : dist

interface Node {
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number }
  readonly selfSize: number
  readonly children: ReadonlyArray<Node>
}

const Effect = await import("effect/Effect")
const Fiber = await import("effect/Fiber")
const Logger = await import("effect/Logger")
const { Supervisor } = await import(Path.join(from, "index.js"))
const { NodeProcessSpawner } = await import(Path.join(from, "node.js"))

let exits = 0
// The package is imported from a path (untyped here): the program's requirements are all provided below.
const program = Effect.scoped(
  Effect.flatMap(
    Supervisor.start({
      processes: 2,
      mode: "command",
      command: "/bin/false",
      args: [],
      maxRestarts: Infinity
    }),
    (handle: any) => handle.await
  )
).pipe(
  Effect.provide(NodeProcessSpawner.layer),
  Effect.provide(
    Logger.layer([
      Logger.make((options: any) => {
        if (String(options.message).endsWith(", restarting")) exits++
        Logger.formatLogFmt.log(options)
      })
    ])
  )
) as EffectType.Effect<unknown, unknown>

const session = new Inspector.Session()
session.connect()
const fiber = Effect.runFork(program)
await sleep(1000)
const e0 = exits
await session.post("HeapProfiler.startSampling", {
  samplingInterval: interval,
  includeObjectsCollectedByMajorGC: true,
  includeObjectsCollectedByMinorGC: true
})
await sleep(seconds * 1000)
const { profile } = (await session.post("HeapProfiler.stopSampling")) as { profile: { head: Node } }
const restarts = exits - e0
await Effect.runPromise(Fiber.interrupt(fiber))
session.disconnect()

const short = (url: string) => url.replace(/^.*\/(node_modules|src|bench|dist)\//, "$1/")
const byFunction = new Map<string, number>()
const byFile = new Map<string, number>()
/** By the nearest function of the package's own (not Effect's, not Node's) on the stack. */
const byOwn = new Map<string, number>()
const isOwn = (url: string) => url.startsWith(`file://${from}/`)
let total = 0
const walk = (node: Node, own: string) => {
  const f = node.callFrame
  const here = isOwn(f.url)
    ? `${f.functionName || "(anonymous)"} ${f.url.slice(from.length + 8)}:${f.lineNumber + 1}`
    : own
  if (node.selfSize > 0) {
    byOwn.set(here, (byOwn.get(here) ?? 0) + node.selfSize)
    const fn = `${f.functionName || "(anonymous)"} ${short(f.url)}:${f.lineNumber + 1}`
    byFunction.set(fn, (byFunction.get(fn) ?? 0) + node.selfSize)
    const file = short(f.url) || f.functionName
    byFile.set(file, (byFile.get(file) ?? 0) + node.selfSize)
    total += node.selfSize
  }
  for (const c of node.children) walk(c, here)
}
walk(profile.head, "(no function of the package on the stack)")
const show = (title: string, m: Map<string, number>) => {
  out(title)
  for (const [k, bytes] of [...m].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    out(`${fmt(bytes / restarts / 1024, 2).padStart(9)} KiB ${((100 * bytes) / total).toFixed(1).padStart(5)} %  ${k}`)
  }
}
out(
  `${restarts} restarts in ${seconds} s; allocated ${fmt(total / restarts / 1024, 1)} KiB per restart (sampled every ${interval} B, freed objects included)`
)
show("\nper restart, by function", byFunction)
show("\nper restart, by file", byFile)
show("\nper restart, by the package's nearest function on the stack", byOwn)
process.exit(0)
