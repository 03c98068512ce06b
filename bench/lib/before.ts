/**
 * The "before" build: the package at another git commit (`--before=REF`,
 * e.g. the tree before an issue's work), built once into
 * bench/.scratch/before/<ref>/ and run beside this tree's build in the same
 * benchmark run (systems `before`, `before-bundled`, `prefork-before`).
 *
 * `prepareBefore(ref)` extracts the commit (`git archive`), links the
 * repository's node_modules into it, compiles its library with `buildOurs`'s
 * tsc build (bdist/), bundles its command with its own scripts/build-cli.mjs,
 * lays it out as npm installs it (installed/node_modules/effect-prefork) and
 * bundles the benchmarks' bundled primary against it. A directory already
 * built for the same commit is reused. The paths go to the environment, so
 * the benchmarks a run starts see them:
 *
 * - BENCH_BEFORE_REF: the ref as given; BENCH_BEFORE_DIST: the compiled library;
 * - BENCH_BEFORE_BIN: its installed bin/prefork.js;
 * - BENCH_BEFORE_BUNDLED: its bundled primary (bench/fixtures/ours-bundled-primary.mjs);
 * - BENCH_BEFORE_SRC: its src/ (bench/supervisor-cost.ts runs the sources).
 */
import { spawnSync } from "node:child_process"
import { existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs"
import * as Path from "node:path"
import { bundleOursPrimary, compileLibrary, installPackage, note, ROOT, SCRATCH, str } from "./common.ts"

/** What `prepareBefore` built, and where. */
export interface Before {
  readonly ref: string
  readonly commit: string
  readonly subject: string
  readonly dir: string
  readonly dist: string
  readonly bin: string
  readonly bundled: string
  readonly src: string
}

/** A ref git takes as a revision, not as an option or a path outside the name space. */
const REF = /^[A-Za-z0-9][A-Za-z0-9._/^~-]{0,99}$/

const git = (args: ReadonlyArray<string>): string => {
  const r = spawnSync("git", ["-C", ROOT, ...args], { encoding: "utf8", timeout: 60_000, maxBuffer: 2 ** 20 })
  if (r.status !== 0) throw new Error(`git ${args.join(" ")} failed: ${(r.stderr ?? String(r.error)).trim()}`)
  return r.stdout.trim()
}

const run = (what: string, command: string, args: ReadonlyArray<string>, cwd: string): void => {
  const r = spawnSync(command, args, { cwd, encoding: "utf8", timeout: 300_000 })
  if (r.status !== 0) throw new Error(`${what} failed (${r.status ?? r.signal}): ${r.stdout}${r.stderr}`)
}

/** The paths of a before tree in `dir`. */
const layout = (dir: string) => {
  const pkg = Path.join(dir, "installed", "node_modules", "effect-prefork")
  return {
    stamp: Path.join(dir, ".built"),
    dist: Path.join(dir, "bdist"),
    pkg,
    bin: Path.join(pkg, "bin", "prefork.js"),
    bundled: Path.join(dir, "bundles", "before-bundled-primary.mjs"),
    src: Path.join(dir, "src")
  }
}

/** Builds the package at `ref` into bench/.scratch/before/<ref>/ (once per commit) and exports its paths. */
export const prepareBefore = async (ref: string): Promise<Before> => {
  if (!REF.test(ref) || ref.includes("..")) throw new Error(`--before: not a git ref: ${JSON.stringify(ref)}`)
  const commit = (() => {
    try {
      return git(["rev-parse", "--verify", "--quiet", `${ref}^{commit}`])
    } catch {
      throw new Error(`--before: ${ref} is not a commit of ${ROOT}`)
    }
  })()
  const subject = git(["log", "-1", "--format=%s", commit])
  const dir = Path.join(SCRATCH, "before", ref.replaceAll("/", "_"))
  const at = layout(dir)
  const built = existsSync(at.stamp) && readFileSync(at.stamp, "utf8").trim() === commit
  if (built && [at.dist, at.bin, at.bundled].every((p) => existsSync(p))) {
    note(`before: ${ref} (${commit.slice(0, 7)}) already built in ${Path.relative(ROOT, dir)}`)
  } else {
    note(`before: building ${ref} (${commit.slice(0, 7)} ${subject.slice(0, 60)}) into ${Path.relative(ROOT, dir)}`)
    rmSync(dir, { recursive: true, force: true })
    mkdirSync(dir, { recursive: true })
    const tar = Path.join(dir, "tree.tar")
    git(["archive", "--format=tar", "-o", tar, commit])
    run("tar -x", "tar", ["-x", "-f", tar, "-C", dir], dir)
    rmSync(tar)
    symlinkSync(Path.join(ROOT, "node_modules"), Path.join(dir, "node_modules"), "dir")
    const compiled = compileLibrary(dir, at.dist)
    if (compiled.status !== 0) note(`before: tsc reported type errors (the emit is used anyway):\n${compiled.output}`)
    run(`${ref}'s scripts/build-cli.mjs`, process.execPath, [Path.join(dir, "scripts", "build-cli.mjs")], dir)
    installPackage(dir, at.dist, at.pkg)
    await bundleOursPrimary(at.dist, at.bundled)
    writeFileSync(at.stamp, `${commit}\n`)
  }
  const before: Before = { ref, commit, subject, dir, dist: at.dist, bin: at.bin, bundled: at.bundled, src: at.src }
  Object.assign(process.env, {
    BENCH_BEFORE_REF: ref,
    BENCH_BEFORE_DIST: before.dist,
    BENCH_BEFORE_BIN: before.bin,
    BENCH_BEFORE_BUNDLED: before.bundled,
    BENCH_BEFORE_SRC: before.src
  })
  return before
}

/**
 * In a benchmark run on its own: `--before=REF` (or BENCH_BEFORE_REF, which
 * result files name) prepares that build, unless a run (bench/run-all.ts)
 * already did and passed its paths. Call it before choosing the systems.
 */
export const beforeFromFlag = async (): Promise<void> => {
  const ref = str("before", "") || (process.env.BENCH_BEFORE_REF ?? "")
  if (ref === "" || process.env.BENCH_BEFORE_DIST !== undefined) return
  await prepareBefore(ref)
}
