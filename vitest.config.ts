import { defineConfig } from "vitest/config"

/**
 * Where the JSON reporter writes its counts. `.ci/run` sets this to read
 * "N passed, N failed" after the run; by default it goes under node_modules,
 * out of the way of git, the linter and the formatter.
 */
const jsonReport = process.env["PREFORK_TEST_REPORT"] ?? "node_modules/.vitest/report.json"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Bundles the `prefork` command first: the CLI tests run it as users get it.
    globalSetup: ["test/helpers/build-cli.ts"],
    // Tests spawn, stop and reap real processes: give them time.
    testTimeout: 30_000,
    hookTimeout: 30_000,
    teardownTimeout: 30_000,
    // Each test file runs in its own child process, two at a time (the CI machine has 2 cores).
    pool: "forks",
    maxWorkers: 2,
    reporters: ["default", ["json", { outputFile: jsonReport }]]
  }
})
