/**
 * The control socket's paths, from the attacker's side (real processes, as
 * root, the attacker being `nobody` through setpriv):
 *
 * - `nobody` creates the default directory first (`prefork-<uid>` in a
 *   sticky, world-writable `$TMPDIR`), mode 0777 or as a symlink to its own
 *   directory, and serves a fake prefork on a socket in it: prefork refuses
 *   the directory and changes nothing in it; `prefork ctl` refuses it (exit 4)
 *   and never connects, so the fake never answers for prefork.
 * - With nothing there, prefork makes the directory itself (0700), the sticky
 *   base keeps its mode, and strace shows the socket bound under umask 177 and
 *   never chmod-ed.
 * - `--control` in a sticky directory, or as `./c.sock`, leaves the directory's
 *   mode alone; a directory of another user, one anyone may write, a file at
 *   the path, or another user's socket there are refused and left as they are.
 * - `prefork ctl` against a socket of ours that accepts and never answers, or
 *   answers something that is not prefork's, exits 3 within its deadline.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync
} from "node:fs"
import * as Net from "node:net"
import * as Path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect } from "effect"
import { assertNoneLeft, eventually, makeTag } from "../helpers/procs.ts"
import { runToEnd } from "./named.ts"
import { BIN, fixture, prefork, stderrHas } from "./prefork.ts"

const uid = process.geteuid?.() ?? 0

const nobody = (() => {
  try {
    return Number(execFileSync("id", ["-u", "nobody"], { encoding: "utf8" }).trim())
  } catch {
    return undefined
  }
})()

const hasStrace = (() => {
  try {
    execFileSync("strace", ["-V"], { stdio: "ignore" })
    return true
  } catch {
    return false
  }
})()

/** The argv that runs a command as `nobody`. */
const asNobody = (argv: ReadonlyArray<string>) => [
  "setpriv",
  `--reuid=${nobody}`,
  `--regid=${nobody}`,
  "--clear-groups",
  "--",
  ...argv
]

/** Runs a short command as `nobody`, synchronously. */
const nobodyDoes = (...argv: Array<string>) => execFileSync(asNobody(argv)[0]!, asNobody(argv).slice(1))

/** The environment whose default control directory is `prefork-<uid>` in `base`. */
const envIn = (base: string): Record<string, string> => ({ XDG_RUNTIME_DIR: "", TMPDIR: base })

const mode = (path: string) => lstatSync(path).mode & 0o7777

/** Runs a process to its end without blocking the test's event loop (bounded: killed after 30 s). */
const run = (argv: ReadonlyArray<string>, env: Record<string, string> = {}, cwd = "/") =>
  runToEnd(argv, {
    cwd,
    env: {
      ...process.env,
      PATH: `${Path.dirname(process.execPath)}:${process.env["PATH"]}`,
      XDG_RUNTIME_DIR: "/nonexistent",
      ...env
    }
  })

/** `prefork ctl …args`, as root unless `as` says otherwise. */
const ctl = (args: ReadonlyArray<string>, env: Record<string, string> = {}) =>
  run([process.execPath, BIN, "ctl", ...args], env)

/** A directory for the test, sticky and world-writable as /tmp is (so `nobody` can plant things in it). */
const stickyBase = Effect.acquireRelease(
  Effect.sync(() => {
    const dir = mkdtempSync("/tmp/prefork-trust-")
    chmodSync(dir, 0o1777)
    return dir
  }),
  (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
)

/**
 * `nobody`'s fake prefork at `path`: it logs each connection to `log` and
 * answers as `mode` says (see fixtures/fake-control.js). Killed at the end of
 * the scope, by pid.
 */
const fakeServer = (path: string, log: string, how: "fake" | "silent" | "garbage", asOther = true) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const { env, tag } = makeTag()
      const argv = [process.execPath, fixture("fake-control.js"), path, log, how]
      const full = asOther ? asNobody(argv) : argv
      const child: ChildProcess = spawn(full[0]!, full.slice(1), { env: { ...process.env, ...env }, stdio: "ignore" })
      return { child, tag }
    }),
    ({ child, tag }) =>
      Effect.gen(function* () {
        child.kill("SIGKILL")
        yield* assertNoneLeft(tag)
      })
  ).pipe(
    Effect.tap(() =>
      eventually(() => (existsSync(log) && readFileSync(log, "utf8").includes("listening")) || undefined)
    ),
    Effect.as({
      connections: () =>
        readFileSync(log, "utf8")
          .split("\n")
          .filter((l) => l === "connection").length
    })
  )

describe.skipIf(uid !== 0 || nobody === undefined)("control socket paths (real processes, another user)", () => {
  it.live("another user's default directory (mode 0777) is refused and left alone; ctl never talks to its socket", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const base = yield* stickyBase
        const dir = Path.join(base, `prefork-${uid}`)
        nobodyDoes("mkdir", "-m", "0777", dir)
        const fake = yield* fakeServer(Path.join(dir, "forever.sock"), Path.join(dir, "log"), "fake")
        const p = yield* prefork(["-n", "1", "--", "node", fixture("forever.js")], { env: envIn(base) })
        yield* stderrHas(p, "Starting 1 process")
        yield* stderrHas(p, `No control socket: refusing ${dir}: it belongs to uid ${nobody}, not to uid 0`)
        // Nothing of the other user's was changed, removed or replaced.
        assert.deepStrictEqual([mode(dir), lstatSync(dir).uid], [0o777, nobody])
        assert.strictEqual(lstatSync(Path.join(dir, "forever.sock")).uid, nobody)
        // The client refuses too, before connecting: the fake's "status" and "done" never reach anyone.
        const status = yield* ctl(["status"], envIn(base))
        assert.strictEqual(status.code, 4, status.stderr)
        assert.include(status.stderr, `refusing ${dir}: it belongs to uid ${nobody}`)
        const reload = yield* ctl(["reload"], envIn(base))
        assert.deepStrictEqual([reload.code, reload.stdout], [4, ""])
        assert.strictEqual(fake.connections(), 0)
        p.signal("SIGTERM")
        assert.strictEqual((yield* p.exit).code, 0, p.stderr())
      })
    )
  )

  it.live(
    "a symlink planted at the default directory is refused, even to a private directory; its target is untouched",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const base = yield* stickyBase
          const dir = Path.join(base, `prefork-${uid}`)
          const theirs = Path.join(base, "theirs")
          nobodyDoes("mkdir", "-m", "0777", theirs)
          nobodyDoes("ln", "-s", theirs, dir)
          const fake = yield* fakeServer(Path.join(theirs, "forever.sock"), Path.join(theirs, "log"), "fake")
          const p = yield* prefork(["-n", "1", "--", "node", fixture("forever.js")], { env: envIn(base) })
          yield* stderrHas(p, `No control socket: refusing ${dir}: it is a symbolic link`)
          assert.strictEqual(mode(theirs), 0o777)
          assert.isTrue(lstatSync(dir).isSymbolicLink())
          const status = yield* ctl(["status"], envIn(base))
          assert.strictEqual(status.code, 4, status.stderr)
          assert.include(status.stderr, "it is a symbolic link")
          assert.strictEqual(fake.connections(), 0)
          p.signal("SIGTERM")
          assert.strictEqual((yield* p.exit).code, 0, p.stderr())
          // A link to a directory of ours, mode 0700, is no better: whoever made the link can point it elsewhere.
          rmSync(dir)
          const ours = mkdtempSync(Path.join(base, "ours-"))
          nobodyDoes("ln", "-s", ours, dir)
          const again = yield* ctl(["status"], envIn(base))
          assert.strictEqual(again.code, 4, again.stderr)
          assert.include(again.stderr, "it is a symbolic link")
        })
      )
  )

  it.live.skipIf(!hasStrace)(
    "with nothing there, prefork makes its own 0700 directory; the sticky base keeps its mode; the socket is born 0600 (strace: umask 177 at bind, no chmod)",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const base = yield* stickyBase
          const dir = Path.join(base, `prefork-${uid}`)
          const socket = Path.join(dir, "forever.sock")
          const trace = Path.join(base, "trace")
          const { env: tagEnv, tag } = makeTag()
          const exited = yield* Deferred.make<number | null>()
          yield* Effect.acquireRelease(
            Effect.sync(() => {
              const c = spawn(
                "strace",
                [
                  "-f",
                  "-qq",
                  "-e",
                  "trace=umask,bind,mkdir,mkdirat,chmod,fchmod,fchmodat",
                  "-o",
                  trace,
                  process.execPath,
                  BIN,
                  "--pid-file",
                  Path.join(base, "pid"),
                  "-n",
                  "1",
                  "--",
                  "node",
                  fixture("forever.js")
                ],
                {
                  env: {
                    ...process.env,
                    PATH: `${Path.dirname(process.execPath)}:${process.env["PATH"]}`,
                    ...envIn(base),
                    ...tagEnv
                  },
                  stdio: "ignore"
                }
              )
              c.on("close", (code) => Deferred.doneUnsafe(exited, Effect.succeed(code)))
              return c
            }),
            (c) =>
              Effect.gen(function* () {
                c.kill("SIGKILL")
                yield* assertNoneLeft(tag, "5 seconds")
              })
          )
          yield* eventually(() => existsSync(socket) || undefined, "20 seconds")
          assert.deepStrictEqual([mode(dir), lstatSync(dir).uid, mode(socket)], [0o700, 0, 0o600])
          assert.strictEqual(mode(base), 0o1777)
          const status = yield* ctl(["status"], envIn(base))
          assert.strictEqual(status.code, 0, status.stderr)
          // prefork (strace's child) stops on SIGTERM; strace exits with it.
          process.kill(Number(readFileSync(Path.join(base, "pid"), "utf8").trim()), "SIGTERM")
          yield* Deferred.await(exited).pipe(Effect.timeout("20 seconds"))
          assert.isFalse(existsSync(socket))
          const lines = readFileSync(trace, "utf8").split("\n")
          const bind = lines.findIndex((l) => l.includes(`bind(`) && l.includes(`sun_path="${socket}"`))
          assert.notStrictEqual(bind, -1, "no bind of the socket traced")
          const tid = lines[bind]!.split(" ")[0]
          const before = lines.slice(0, bind).filter((l) => l.startsWith(`${tid} `) && /umask\(/.test(l))
          assert.match(before.at(-1) ?? "", /umask\(0177\)/)
          assert.isTrue(
            lines.some((l) => l.includes(`mkdir("${dir}", 0700)`)),
            "the directory was not made by mkdir"
          )
          // Nothing was chmod-ed: not the socket, not the directory, not the base.
          assert.deepStrictEqual(
            lines.filter((l) => /chmod/.test(l) && (l.includes(dir) || l.includes(base))),
            []
          )
        })
      ),
    60_000
  )

  it.live(
    "--control leaves the directory it is in alone (sticky /tmp-like, or the working directory), and refuses what others control",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const base = yield* stickyBase
          // In a sticky directory: mode 0600 from the start, the directory still 1777.
          const inSticky = Path.join(base, "c.sock")
          const p = yield* prefork(["--control", inSticky, "-n", "1", "--", "node", fixture("forever.js")])
          yield* eventually(() => existsSync(inSticky) || undefined, "20 seconds")
          assert.deepStrictEqual([mode(inSticky), mode(base)], [0o600, 0o1777])
          assert.strictEqual((yield* ctl(["--control", inSticky, "status"])).code, 0)
          p.signal("SIGTERM")
          assert.strictEqual((yield* p.exit).code, 0, p.stderr())
          // `--control ./c.sock`: the working directory keeps its mode (it was made 0700 before).
          const cwd = Path.join(base, "work")
          mkdirSync(cwd, { mode: 0o755 })
          chmodSync(cwd, 0o755)
          const q = yield* prefork(["--control", "./c.sock", "-n", "1", "--", "node", fixture("forever.js")], { cwd })
          yield* eventually(() => existsSync(Path.join(cwd, "c.sock")) || undefined, "20 seconds")
          assert.strictEqual(mode(cwd), 0o755)
          assert.strictEqual(
            (yield* run([process.execPath, BIN, "ctl", "--control", "./c.sock", "status"], {}, cwd)).code,
            0
          )
          q.signal("SIGTERM")
          assert.strictEqual((yield* q.exit).code, 0, q.stderr())

          /** prefork with `--control path` must stop with a usage error naming the reason, and leave `path` as it was. */
          const refused = (path: string, reason: string) =>
            Effect.gen(function* () {
              const before = existsSync(path) ? lstatSync(path) : undefined
              const r = yield* prefork(["--control", path, "-n", "1", "--", "node", fixture("forever.js")])
              assert.strictEqual((yield* r.exit).code, 2, r.stderr())
              assert.include(r.stderr(), reason)
              const after = existsSync(path) ? lstatSync(path) : undefined
              assert.deepStrictEqual(
                [after?.ino, after?.mode, after?.uid],
                [before?.ino, before?.mode, before?.uid],
                `${path} changed`
              )
            })
          // A directory of another user.
          const theirs = Path.join(base, "theirs")
          nobodyDoes("mkdir", "-m", "0755", theirs)
          yield* refused(Path.join(theirs, "c.sock"), `it belongs to uid ${nobody}, neither to uid 0 nor to root`)
          assert.isFalse(existsSync(Path.join(theirs, "c.sock")))
          // A directory of ours that anyone may write, not sticky.
          const open = Path.join(base, "open")
          mkdirSync(open)
          chmodSync(open, 0o777)
          yield* refused(Path.join(open, "c.sock"), "it is writable by others (mode 0777) and not sticky")
          assert.strictEqual(mode(open), 0o777)
          // A file where the socket would be.
          const file = Path.join(base, "file.sock")
          writeFileSync(file, "precious")
          yield* refused(file, "it is not a socket")
          assert.strictEqual(readFileSync(file, "utf8"), "precious")
          // Another user's socket, in the sticky directory: neither replaced by prefork nor used by ctl.
          const planted = Path.join(base, "planted.sock")
          const fake = yield* fakeServer(planted, Path.join(theirs, "log"), "fake")
          yield* refused(planted, `the socket belongs to uid ${nobody}, not to uid 0`)
          const asked = yield* ctl(["--control", planted, "reload"])
          assert.deepStrictEqual([asked.code, asked.stdout], [4, ""])
          assert.strictEqual(fake.connections(), 0)
          // Through a link to another user's directory: refused where it leads.
          const link = Path.join(base, "link")
          nobodyDoes("ln", "-s", theirs, link)
          yield* refused(Path.join(link, "c.sock"), `it belongs to uid ${nobody}`)
          assert.strictEqual(statSync(theirs).mode & 0o7777, 0o755)
        })
      ),
    90_000
  )
})

describe("prefork ctl against a socket that is not a working prefork", () => {
  /** A socket of ours, in a private directory, that accepts and then does what `answer` says with each request. */
  const ownServer = (answer: (socket: Net.Socket) => void) =>
    Effect.acquireRelease(
      Effect.callback<{ path: string; server: Net.Server; dir: string }>((resume) => {
        const dir = mkdtempSync("/tmp/prefork-ctl-")
        const path = Path.join(dir, "c.sock")
        const server = Net.createServer((socket) => {
          socket.on("error", () => {})
          socket.once("data", () => answer(socket))
        })
        server.listen(path, () => resume(Effect.succeed({ path, server, dir })))
      }),
      ({ dir, server }) =>
        Effect.sync(() => {
          server.close()
          rmSync(dir, { recursive: true, force: true })
        })
    )

  it.live("one that never answers: exit 3 at the deadline (--timeout, and the 10 s default of status)", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const { path } = yield* ownServer(() => {})
        const started = performance.now()
        const status = yield* ctl(["--control", path, "--timeout", "1s", "status"])
        assert.strictEqual(status.code, 3, status.stderr)
        assert.include(status.stderr, `no answer from ${path} within 1s; --timeout <duration> waits longer`)
        const reload = yield* ctl(["--control", path, "--timeout=500ms", "reload"])
        assert.strictEqual(reload.code, 3, reload.stderr)
        assert.include(reload.stderr, "(the reload may still be under way)")
        const dflt = yield* ctl(["--control", path, "status"])
        assert.strictEqual(dflt.code, 3, dflt.stderr)
        assert.include(dflt.stderr, "within 10s")
        // The deadlines held: not one of them was waited out by a test timeout.
        assert.isBelow(performance.now() - started, 30_000)
        assert.strictEqual((yield* ctl(["--control", path, "--timeout", "soon", "status"])).code, 2)
      })
    )
  )

  it.live("one that answers what prefork never would: exit 3, nothing printed as done", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const garbage = yield* ownServer((socket) => socket.write("hello, this is not prefork\n"))
        const a = yield* ctl(["--control", garbage.path, "reload"])
        assert.deepStrictEqual([a.code, a.stdout], [3, ""])
        assert.include(a.stderr, "is not prefork's: not JSON")
        const shapeless = yield* ownServer((socket) => socket.write(`{"ok":true,"workers":[{"task":"x"}]}\n`))
        const b = yield* ctl(["--control", shapeless.path, "status"])
        assert.deepStrictEqual([b.code, b.stdout], [3, ""])
        assert.include(b.stderr, "is not prefork's: no valid worker rows")
        const closing = yield* ownServer((socket) => socket.end())
        const c = yield* ctl(["--control", closing.path, "status"])
        assert.strictEqual(c.code, 3, c.stderr)
        assert.include(c.stderr, "closed the connection without an answer")
      })
    )
  )
})
