/**
 * Watch mode for development (`--watch`): a rolling reload when files change.
 * Built on Node's own recursive `fs.watch` (inotify on Linux, FSEvents on
 * macOS); changes under an ignored path (`--watch-ignore` globs, and always
 * `node_modules` and `.git`) are dropped, and a burst of changes (an editor
 * saving, a `git checkout`) becomes one reload once it has been quiet for
 * the debounce time.
 *
 * @since 0.1.0
 */
import { type FSWatcher, statSync, watch as fsWatch } from "node:fs"
import * as Path from "node:path"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"

/**
 * Always ignored, whatever `--watch-ignore` says.
 *
 * @since 0.1.0
 * @category constants
 */
export const ALWAYS_IGNORED: ReadonlyArray<string> = ["**/node_modules/**", "**/.git/**"]

/**
 * Whether a changed path (relative to the watched directory) is ignored.
 *
 * @since 0.1.0
 * @category predicates
 */
export const isIgnored = (file: string, ignore: ReadonlyArray<string>): boolean => {
  const normalized = file.split(Path.sep).join("/")
  return [...ALWAYS_IGNORED, ...ignore].some(
    (glob) => Path.matchesGlob(normalized, glob) || Path.matchesGlob(`./${normalized}`, glob) || normalized === glob
  )
}

/**
 * Watches `paths` for as long as the scope lasts, and runs `onChange` with
 * the changed files once changes have been quiet for `debounce`. A path is a
 * directory (watched recursively; a change names the file under it) or a
 * file (a change names that file). A path that cannot be watched fails at
 * once.
 *
 * @since 0.1.0
 * @category constructors
 */
export const watch = (options: {
  readonly paths: ReadonlyArray<string>
  readonly ignore: ReadonlyArray<string>
  readonly debounce: Duration.Duration
  readonly onChange: (files: ReadonlyArray<string>) => Effect.Effect<void>
}): Effect.Effect<void, Error, Scope.Scope> =>
  Effect.gen(function* () {
    const changes = yield* Queue.unbounded<string>()
    const watchers: Array<FSWatcher> = []
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        for (const watcher of watchers) watcher.close()
      })
    )
    for (const path of options.paths) {
      const watcher = yield* Effect.try({
        try: () => {
          // Recursive watchers report a missing path late, as an 'error' event: look first.
          const directory = statSync(path).isDirectory()
          return fsWatch(path, { recursive: true, persistent: false }, (_, file) => {
            const name = file === null ? "" : String(file)
            if (isIgnored(name === "" ? Path.basename(path) : name, options.ignore)) return
            // A watched file reports its own name: the change is the file itself, not a path under it.
            Queue.offerUnsafe(changes, directory && name !== "" ? Path.join(path, name) : path)
          })
        },
        catch: (error) =>
          new Error(`--watch: cannot watch ${path}: ${error instanceof Error ? error.message : String(error)}`)
      })
      watcher.on("error", () => {})
      watchers.push(watcher)
    }
    // A burst of changes is one reload: collected until the files have been quiet for the debounce time.
    let pending = new Set<string>()
    yield* Stream.fromQueue(changes).pipe(
      Stream.tap((file) => Effect.sync(() => pending.add(file))),
      Stream.debounce(options.debounce),
      Stream.runForEach(() =>
        Effect.suspend(() => {
          const files = [...pending]
          pending = new Set()
          return options.onChange(files)
        })
      ),
      Effect.forkScoped
    )
  })
