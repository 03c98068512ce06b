/**
 * Summarizes a V8 CPU profile (from `--profile-primary=…` or `node --cpu-prof`):
 * the functions with the most self time, then the files, then a restart's
 * parts (`--parts`): each sample goes to the first part, in the order of
 * `PARTS`, that any frame of its stack belongs to (so a log line's write goes
 * to "log", a spawn's argument checks to "spawn").
 *
 *   node bench/profile-top.ts bench/.scratch/prof/CPU.….cpuprofile [--top=30] [--parts]
 */
import { readFileSync } from "node:fs"
import { num, out } from "./lib/common.ts"

interface Profile {
  readonly nodes: ReadonlyArray<{
    readonly id: number
    readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number }
    readonly children?: ReadonlyArray<number>
  }>
  readonly samples: ReadonlyArray<number>
  readonly timeDeltas: ReadonlyArray<number>
}

const file = process.argv.slice(2).find((a) => !a.startsWith("--"))
if (file === undefined) throw new Error("usage: node bench/profile-top.ts <file.cpuprofile> [--top=30]")
const top = num("top", 30, 30)
const profile = JSON.parse(readFileSync(file, "utf8")) as Profile
const byId = new Map(profile.nodes.map((n) => [n.id, n]))
const selfTime = new Map<number, number>()
let total = 0
profile.samples.forEach((id, i) => {
  const dt = profile.timeDeltas[i] ?? 0
  selfTime.set(id, (selfTime.get(id) ?? 0) + dt)
  total += dt
})
const short = (url: string) => url.replace(/^.*\/(node_modules|src|bench)\//, "$1/")
const byFunction = new Map<string, number>()
const byFile = new Map<string, number>()
for (const [id, t] of selfTime) {
  const frame = byId.get(id)?.callFrame
  if (frame === undefined) continue
  const fn = `${frame.functionName || "(anonymous)"} ${short(frame.url)}:${frame.lineNumber + 1}`
  byFunction.set(fn, (byFunction.get(fn) ?? 0) + t)
  const f = short(frame.url) || frame.functionName
  byFile.set(f, (byFile.get(f) ?? 0) + t)
}
const show = (title: string, m: Map<string, number>) => {
  out(title)
  for (const [k, t] of [...m].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    out(`${(t / 1000).toFixed(1).padStart(9)} ms ${((100 * t) / total).toFixed(1).padStart(5)} %  ${k}`)
  }
}
show(`self time by function (total ${(total / 1000).toFixed(0)} ms)`, byFunction)
show("\nself time by file", byFile)

/**
 * A restart's parts, most specific first: a frame's function name and URL
 * (file name or, in a bundle, only the function's name) select its part.
 */
const PARTS: ReadonlyArray<readonly [string, RegExp]> = [
  ["spawn (child_process.spawn, cluster.fork)", /node:(internal\/)?child_process|node:internal\/cluster/],
  ["watchdog (its pipe's lines)", /internal\/watchdog|^(retain|unwatch) /],
  [
    "spawn: what we do around it (env, argv, handle)",
    /NodeProcessSpawner|NodeClusterSpawner|internal\/(child|preflight|preload|group)\./
  ],
  ["log (format, write)", /Logger|logger|Logging|logfmt|formatLog|prettyLog|^log[A-Z]\w* /],
  ["metrics", /Metric|prometheus/],
  ["spans (tracer)", /Tracer|tracer|[Ss]pan\w* /],
  ["publish (events, PubSub)", /PubSub|^publish /],
  ["budget step", /RestartPolicy|^step |updateBudget/],
  ["output piping", /node:net|node:internal\/streams|internal\/output|onStreamRead|^pipeOutput /],
  [
    "slot state, classify (loop, life, slot, mailbox)",
    /internal\/(loop|life|slot|mailbox|health|surge)|ExitStatus|SubscriptionRef|^(tell|classify|incarnation|supervise|apply) /
  ],
  ["garbage collector", /^\(garbage collector\)/],
  ["idle", /^\(idle\)/],
  ["Effect runtime (fibers, scopes, other)", /effect\/dist|\/effect\/|prefork\.js/],
  ["Node, other", /node:|^\(program\)|^\(anonymous\) $/]
]
if (process.argv.includes("--parts")) {
  const parent = new Map<number, number>()
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
  const partOf = (leaf: number): string => {
    const frames: Array<string> = []
    for (let id: number | undefined = leaf; id !== undefined; id = parent.get(id)) {
      const f = byId.get(id)?.callFrame
      if (f !== undefined) frames.push(`${f.functionName || "(anonymous)"} ${f.url}`)
    }
    for (const [part, re] of PARTS) if (frames.some((f) => re.test(f))) return part
    return "other"
  }
  const byPart = new Map<string, number>()
  for (const [id, t] of selfTime) {
    const part = partOf(id)
    byPart.set(part, (byPart.get(part) ?? 0) + t)
  }
  show("\nby part of a restart (first part any frame of the stack belongs to)", byPart)
}
