/**
 * Summarizes a V8 CPU profile (from `--profile-primary=…` or `node --cpu-prof`):
 * the functions with the most self time, then the files.
 *
 *   node bench/profile-top.ts bench/.scratch/prof/CPU.….cpuprofile [--top=30]
 */
import { readFileSync } from "node:fs"
import { num, out } from "./lib/common.ts"

interface Profile {
  readonly nodes: ReadonlyArray<{
    readonly id: number
    readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number }
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
