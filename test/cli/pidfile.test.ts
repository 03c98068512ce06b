/**
 * `prefork --pid-file` against someone else's files: a root prefork writing
 * its pid into a directory another user controls never writes through a link
 * they planted, never takes the place of a live prefork, replaces a stale
 * file, and removes only the file it wrote. Refusals are exit 2 with the
 * reason, before any worker starts.
 */
import { execFileSync, spawnSync } from "node:child_process"
import {
  chmodSync,
  chownSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  renameSync,
  statSync,
  writeFileSync
} from "node:fs"
import * as Path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { eventually } from "../helpers/procs.ts"
import { tempDir } from "../helpers/supervise.ts"
import { fixture, prefork, stderrHas } from "./prefork.ts"

const root = process.getuid?.() === 0
const nobody = (() => {
  try {
    return {
      uid: Number(execFileSync("id", ["-u", "nobody"], { encoding: "utf8" }).trim()),
      gid: Number(execFileSync("id", ["-g", "nobody"], { encoding: "utf8" }).trim())
    }
  } catch {
    return undefined
  }
})()

/** Runs a command as nobody (the attacker), failing the test if it fails. */
const asNobody = (command: string, args: ReadonlyArray<string>) => {
  const r = spawnSync(
    "setpriv",
    [`--reuid=${nobody!.uid}`, `--regid=${nobody!.gid}`, "--clear-groups", "--", command, ...args],
    { encoding: "utf8", timeout: 10_000 }
  )
  assert.strictEqual(r.status, 0, `${command} ${args.join(" ")} as nobody: ${r.stderr}`)
}

/** A root-owned 0600 file outside the attacker's reach: what a planted link points at. */
const secret = (dir: string) => {
  const target = Path.join(dir, "secret")
  writeFileSync(target, "root's own data\n", { mode: 0o600 })
  return target
}

const unchanged = (target: string) => {
  assert.strictEqual(readFileSync(target, "utf8"), "root's own data\n")
  const stat = statSync(target)
  assert.strictEqual(stat.mode & 0o7777, 0o600)
  assert.strictEqual(stat.uid, 0)
}

/** A directory owned by nobody (as `/run/app` owned by the app's user), inside the test's directory. */
const nobodysDir = (dir: string) => {
  // The test's own directory (mkdtemp: 0700), opened so that nobody can reach its subdirectory.
  chmodSync(dir, 0o755)
  const run = Path.join(dir, "run")
  mkdirSync(run, { mode: 0o755 })
  chownSync(run, nobody!.uid, nobody!.gid)
  return run
}

/** The last pid the kernel handed out: the old code's temp name was `<file>.<pid>.tmp`, guessable from it. */
const lastPid = () => Number(readFileSync("/proc/sys/kernel/ns_last_pid", "utf8").trim())

const refused = (args: ReadonlyArray<string>, message: string) =>
  Effect.gen(function* () {
    const p = yield* prefork(args)
    const { code } = yield* p.exit
    assert.strictEqual(code, 2, p.stderr())
    assert.include(p.stderr(), message)
    assert.notInclude(p.stderr(), "Starting")
  })

describe.skipIf(!root || nobody === undefined)(
  "prefork --pid-file against another user (as root, real processes)",
  () => {
    it.live(
      "links planted at the pid file's path and at guessable temp names: nothing written through them, the target's content and mode unchanged",
      () =>
        Effect.scoped(
          Effect.gen(function* () {
            const dir = yield* tempDir
            const target = secret(dir)
            const run = nobodysDir(dir)
            const file = Path.join(run, "prefork.pid")

            // At the path itself: refused, untouched.
            asNobody("ln", ["-s", target, file])
            yield* refused(
              ["-n", "1", "--pid-file", file, "--", "node", fixture("forever.js")],
              `--pid-file: ${file} is a symbolic link; refusing to write through it`
            )
            unchanged(target)
            assert.isTrue(lstatSync(file).isSymbolicLink())

            // At the temp names a pid-based scheme would use (the next 300 pids, and a fixed one): prefork writes its own.
            asNobody("rm", [file])
            const next = lastPid()
            for (let pid = next + 1; pid <= next + 300; pid++) asNobody("ln", ["-s", target, `${file}.${pid}.tmp`])
            asNobody("ln", ["-s", target, `${file}.tmp`])
            const p = yield* prefork(["-n", "1", "--pid-file", file, "--", "node", fixture("forever.js")])
            yield* stderrHas(p, "Starting 1 process")
            yield* eventually(() => (existsSync(file) ? true : undefined))
            assert.strictEqual(readFileSync(file, "utf8"), `${p.pid}\n`)
            const written = lstatSync(file)
            assert.isTrue(written.isFile())
            assert.strictEqual(written.mode & 0o022, 0, "the pid file is writable by others")
            unchanged(target)
            p.signal("SIGTERM")
            assert.strictEqual((yield* p.exit).code, 0, p.stderr())
            assert.isFalse(existsSync(file))
            unchanged(target)
            // Only the planted links are left: no temp file of prefork's.
            assert.deepStrictEqual(
              readdirSync(run).filter((name) => !lstatSync(Path.join(run, name)).isSymbolicLink()),
              []
            )
          })
        )
    )

    it.live("a pid file naming a live process is refused (already running), left as it was; no worker starts", () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const file = Path.join(nobodysDir(dir), "prefork.pid")
          // The live process: this test's own (not prefork's).
          asNobody("sh", ["-c", `echo ${process.pid} > ${file}`])
          yield* refused(
            ["-n", "1", "--pid-file", file, "--", "node", fixture("forever.js")],
            `--pid-file: already running on PID ${process.pid} (per ${file})`
          )
          assert.strictEqual(readFileSync(file, "utf8"), `${process.pid}\n`)
        })
      )
    )

    it.live("what is not a pid file is refused, untouched: a directory, a FIFO (without blocking), other content", () =>
      Effect.scoped(
        Effect.gen(function* () {
          const dir = yield* tempDir
          const run = nobodysDir(dir)
          const args = (file: string) => ["-n", "1", "--pid-file", file, "--", "node", fixture("forever.js")]

          const directory = Path.join(run, "dir.pid")
          asNobody("mkdir", [directory])
          yield* refused(args(directory), `--pid-file: ${directory} exists and is not a regular file`)

          const fifo = Path.join(run, "fifo.pid")
          asNobody("mkfifo", [fifo])
          yield* refused(args(fifo), `--pid-file: ${fifo} exists and is not a regular file`)
          assert.isTrue(lstatSync(fifo).isFIFO())

          const other = Path.join(run, "config.pid")
          asNobody("sh", ["-c", `printf 'not a pid\\n' > ${other}`])
          yield* refused(args(other), `--pid-file: ${other} exists and does not hold a pid`)
          assert.strictEqual(readFileSync(other, "utf8"), "not a pid\n")
        })
      )
    )
  }
)

describe("prefork --pid-file: stale files and the end (real processes)", () => {
  it.live("a stale pid file (its process is gone) is replaced; removed at exit", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const dir = yield* tempDir
        const file = Path.join(dir, "prefork.pid")
        // A pid that was just used and is gone.
        const gone = spawnSync("true").pid!
        writeFileSync(file, `${gone}\n`)
        const p = yield* prefork(["-n", "1", "--pid-file", file, "--", "node", fixture("forever.js")])
        yield* stderrHas(p, "Starting 1 process")
        yield* eventually(() => (readFileSync(file, "utf8") === `${p.pid}\n` ? true : undefined))
        p.signal("SIGTERM")
        assert.strictEqual((yield* p.exit).code, 0, p.stderr())
        assert.isFalse(existsSync(file))
      })
    )
  )

  it.live("a pid file replaced while prefork runs is not removed at exit, even one holding the same pid", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const dir = yield* tempDir
        const file = Path.join(dir, "prefork.pid")
        const run = (replacement: (pid: number) => string) =>
          Effect.gen(function* () {
            const p = yield* prefork(["-n", "1", "--pid-file", file, "--", "node", fixture("forever.js")])
            yield* stderrHas(p, "Starting 1 process")
            yield* eventually(() => (existsSync(file) && readFileSync(file, "utf8") !== "" ? true : undefined))
            // Someone else's file now: a new inode at the path.
            writeFileSync(`${file}.new`, replacement(p.pid))
            renameSync(`${file}.new`, file)
            p.signal("SIGTERM")
            assert.strictEqual((yield* p.exit).code, 0, p.stderr())
            assert.strictEqual(readFileSync(file, "utf8"), replacement(p.pid))
          })
        // Another prefork's pid, then the same pid in a file prefork did not write.
        yield* run(() => "4194303\n")
        yield* run((pid) => `${pid}\n`)
      })
    )
  )
})
