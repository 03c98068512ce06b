/**
 * A parsed command line for tests of `Command.toOptions`: `prefork -n 2 --
 * node app.js` with every flag at its default, and `overrides`.
 */
import { Option } from "effect"
import type * as Command from "../../src/cli/Command.ts"

export const input = (overrides: Partial<Command.Input>): Command.Input => ({
  processes: 2,
  restart: "on-failure",
  normalExitCodes: Option.none(),
  maxRestarts: Option.none(),
  intensity: Option.none(),
  backoff: Option.none(),
  backoffMax: Option.none(),
  backoffFactor: Option.none(),
  resetAfter: Option.none(),
  stopTimeout: Option.none(),
  shutdownDelay: Option.none(),
  ready: "spawn",
  readyTimeout: Option.none(),
  heartbeat: Option.none(),
  maxMemory: Option.none(),
  maxLifetime: Option.none(),
  lifetimeJitter: Option.none(),
  spares: Option.none(),
  metrics: Option.none(),
  health: Option.none(),
  listen: [],
  cluster: false,
  drain: true,
  env: [],
  watch: [],
  watchIgnore: [],
  watchDebounce: Option.none(),
  user: Option.none(),
  group: Option.none(),
  control: Option.none(),
  name: Option.none(),
  pidFile: Option.none(),
  cwd: Option.none(),
  prefix: true,
  logFormat: "pretty",
  command: ["node", "app.js"],
  ...overrides
})
