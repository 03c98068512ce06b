/**
 * autocannon (installed in bench/.scratch/peers by `ensurePeers`) run in a
 * process of its own against one URL, its JSON report parsed.
 */
import { spawn } from "node:child_process"
import * as Path from "node:path"
import { HOST, peerDir, track } from "./common.ts"

/** The part of autocannon's JSON report the benchmarks read. */
export interface Cannon {
  readonly requests: { readonly average: number; readonly total: number }
  readonly latency: { readonly p50: number; readonly p99: number; readonly average: number }
  readonly errors: number
  readonly timeouts: number
  readonly non2xx: number
}

/**
 * GETs `http://127.0.0.1:<port>/` for `seconds` over `connections` keep-alive
 * connections, one request in flight on each (or a new connection per request
 * with `newConnections`). Killed 60 s after it should have ended.
 */
export const autocannon = (
  port: number,
  seconds: number,
  options: { readonly connections: number; readonly newConnections?: boolean | undefined }
): Promise<Cannon> =>
  new Promise((resolve, reject) => {
    const args = [
      Path.join(peerDir("autocannon"), "autocannon.js"),
      "--json",
      "--no-progress",
      "-c",
      String(options.connections),
      "-d",
      String(seconds),
      "-p",
      "1",
      "-t",
      "10",
      ...(options.newConnections === true ? ["-H", "Connection=close"] : []),
      `http://${HOST}:${port}/`
    ]
    const child = track(spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"], detached: true }))
    let stdout = ""
    let stderr = ""
    child.stdout!.on("data", (c: Buffer) => (stdout += c.toString()))
    child.stderr!.on("data", (c: Buffer) => (stderr += c.toString()))
    const timer = setTimeout(() => child.kill("SIGKILL"), (seconds + 60) * 1000)
    child.once("exit", (code) => {
      clearTimeout(timer)
      try {
        resolve(JSON.parse(stdout) as Cannon)
      } catch {
        reject(new Error(`autocannon exited ${code}: ${stderr.slice(0, 500)}`))
      }
    })
  })
