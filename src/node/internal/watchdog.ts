/**
 * Where the kernel cannot be asked to kill a worker when its primary dies
 * (`setpriv --pdeathsig` is Linux-only), a watchdog can: a small process that
 * holds a pipe from the primary, learns each worker's process group as it is
 * spawned (`+pgid`) and reaped (`-pgid`), and SIGKILLs every group still
 * listed when the pipe closes — which the kernel does when the primary dies,
 * even by SIGKILL. A primary that ends normally has reaped its workers first,
 * so the list is empty and the watchdog just exits.
 */
import { type ChildProcess, spawn } from "node:child_process"

// The watchdog's own program: plain JavaScript for `node -e`, no dependencies.
const PROGRAM = `
const groups = new Set()
let pending = ""
process.stdin.setEncoding("utf8")
process.stdin.on("data", (chunk) => {
  const lines = (pending + chunk).split("\\n")
  pending = lines.pop()
  for (const line of lines) {
    const pgid = Number(line.slice(1))
    if (!Number.isInteger(pgid) || pgid <= 1) continue
    if (line[0] === "+") groups.add(pgid)
    else groups.delete(pgid)
  }
})
const killAll = () => {
  for (const pgid of groups) {
    try { process.kill(-pgid, "SIGKILL") } catch {}
  }
  process.exit(0)
}
process.stdin.on("end", killAll)
process.stdin.on("error", killAll)
process.on("SIGINT", () => {})
`

/** @internal */
export interface Watchdog {
  readonly watch: (pgid: number) => void
  readonly unwatch: (pgid: number) => void
}

/**
 * Starts the watchdog (once, on first use). It never keeps the primary alive:
 * its process and its pipe are unreferenced.
 *
 * @internal
 */
export const make = (): Watchdog => {
  let child: ChildProcess | undefined
  const send = (line: string) => {
    if (child === undefined) {
      child = spawn(process.execPath, ["--max-old-space-size=16", "-e", PROGRAM], {
        stdio: ["pipe", "ignore", "ignore"],
        detached: true,
        windowsHide: true
      })
      child.on("error", () => {})
      child.stdin!.on("error", () => {})
      child.unref()
      ;(child.stdin as unknown as { unref?: () => void }).unref?.()
    }
    if (child.stdin!.writable) child.stdin!.write(line)
  }
  return {
    watch: (pgid) => send(`+${pgid}\n`),
    unwatch: (pgid) => send(`-${pgid}\n`)
  }
}
