/**
 * The kinds of option `Options` is made of: {@link value}, {@link choice},
 * {@link boolean} and {@link list}, each giving an option's effect/cli flag,
 * its config-file reader (the flag's own parser) and its JSON Schema entry.
 *
 * @since 0.1.0
 */
import * as Option from "effect/Option"
import * as Result from "effect/Result"
import { Flag } from "effect/cli"

/**
 * A JSON Schema fragment (draft 2020-12).
 *
 * @since 0.1.0
 * @category models
 */
export type JsonSchema = { readonly [key: string]: unknown }

/**
 * One option. `G` is what the command line gives (`Option.none()` or an empty
 * list when absent), `R` what `Input` holds once defaults are applied.
 *
 * @since 0.1.0
 * @category models
 */
export interface Opt<G, R> {
  /** The long flag without dashes, and the config file's key. */
  readonly name: string
  readonly alias: string | undefined
  /** Whether the flag takes a value from the next argument (else it is a boolean). */
  readonly takesValue: boolean
  readonly flag: Flag.Flag<G>
  /** Reads the config file's value: the same parser as the flag's, or what was expected. */
  readonly fromJson: (value: unknown) => Result.Result<G, string>
  /** Whether the command line (or file) gave this option. */
  readonly given: (value: G) => boolean
  /** The value `Input` holds: the given one or the default. */
  readonly resolve: (value: G) => R
  readonly schema: JsonSchema
}

/**
 * An option's help text: what it does, then its default.
 *
 * @since 0.1.0
 * @category formatting
 */
export const describe = (text: string, fallback: string) => `${text} (default: ${fallback})`

const got = (value: unknown) => `got ${JSON.stringify(value) ?? String(value)}`

interface ValueSpec<A> {
  readonly alias?: string
  readonly metavar: string
  readonly description: string
  /** The default as `--help` says it. */
  readonly fallback: string
  /** The default as the JSON Schema says it, when `fallback` depends on the machine. */
  readonly schemaFallback?: string
  /** The flag's parser, also applied to the config file's string (or number) value. */
  readonly parse: (text: string) => Option.Option<A>
  /** What a valid value looks like, for error messages. */
  readonly expected: string
  /** A JSON number is also accepted in a config file (read as its decimal text). */
  readonly numbers?: "integer" | "number"
  /** A JSON Schema pattern for the string form. */
  readonly pattern?: string
}

/** An option given at most once (absent: `Option.none()`); `read` takes the config file's value. */
const single = <A>(
  fields: Pick<Opt<Option.Option<A>, Option.Option<A>>, "name" | "alias" | "takesValue" | "flag" | "schema">,
  read: (json: unknown) => Option.Option<A>,
  expected: string
): Opt<Option.Option<A>, Option.Option<A>> => ({
  ...fields,
  fromJson: (json) => {
    const parsed = read(json)
    return Option.isSome(parsed) ? Result.succeed(parsed) : Result.fail(`expected ${expected}, ${got(json)}`)
  },
  given: Option.isSome,
  resolve: (a) => a
})

/**
 * An option with one value, read by `parse` (absent: `Option.none()`).
 *
 * @since 0.1.0
 * @category constructors
 */
export const value = <A>(name: string, spec: ValueSpec<A>): Opt<Option.Option<A>, Option.Option<A>> => {
  const description = describe(spec.description, spec.fallback)
  const base = Flag.String(name).pipe(
    Flag.withMetavar(spec.metavar),
    Flag.filterMap(spec.parse, () => spec.expected),
    Flag.withDescription(description)
  )
  return single(
    {
      name,
      alias: spec.alias,
      takesValue: true,
      flag: Flag.optional(spec.alias === undefined ? base : Flag.withAlias(base, spec.alias)),
      schema: {
        description: spec.schemaFallback === undefined ? description : describe(spec.description, spec.schemaFallback),
        ...(spec.numbers === undefined ? { type: "string" } : { type: ["string", spec.numbers] }),
        ...(spec.pattern === undefined ? {} : { pattern: spec.pattern })
      }
    },
    // A number is read as its decimal text, by the same parser.
    (json) =>
      typeof json === "string"
        ? spec.parse(json)
        : typeof json === "number" && spec.numbers !== undefined
          ? spec.parse(String(json))
          : Option.none(),
    spec.expected
  )
}

/**
 * An option whose value is one of `choices`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const choice = <const C extends string>(
  name: string,
  choices: ReadonlyArray<C>,
  spec: { readonly description: string; readonly fallback: string }
): Opt<Option.Option<C>, Option.Option<C>> => {
  const description = describe(spec.description, spec.fallback)
  return single(
    {
      name,
      alias: undefined,
      takesValue: true,
      flag: Flag.Literals(name, choices).pipe(Flag.withDescription(description), Flag.optional),
      schema: { description, enum: choices }
    },
    (json) => (choices.includes(json as C) ? Option.some(json as C) : Option.none()),
    `one of ${choices.map((c) => JSON.stringify(c)).join(", ")}`
  )
}

/**
 * A boolean option: `--name`, `--no-name`; `true` or `false` in a config file.
 *
 * @since 0.1.0
 * @category constructors
 */
export const boolean = (
  name: string,
  spec: { readonly description: string; readonly fallback: string }
): Opt<Option.Option<boolean>, Option.Option<boolean>> => {
  const description = describe(spec.description, spec.fallback)
  return single(
    {
      name,
      alias: undefined,
      takesValue: false,
      flag: Flag.Boolean(name).pipe(Flag.withDescription(description), Flag.optional),
      schema: { description, type: "boolean" }
    },
    (json) => (typeof json === "boolean" ? Option.some(json) : Option.none()),
    "true or false"
  )
}

/**
 * A repeatable option (`--listen a --listen b`); in a config file a list of
 * strings, or one string. A list on the command line replaces the file's.
 * With `entries`, a config file may also give an object (`{"KEY": "VALUE"}`
 * for `--env KEY=VALUE`).
 *
 * @since 0.1.0
 * @category constructors
 */
export const list = <A = string>(
  name: string,
  spec: Omit<ValueSpec<A>, "numbers" | "parse" | "expected"> & {
    readonly parse?: (text: string) => Option.Option<A>
    readonly expected?: string
    readonly entries?: boolean
  }
): Opt<ReadonlyArray<A>, ReadonlyArray<A>> => {
  const description = describe(spec.description, spec.fallback)
  const parse = spec.parse ?? ((text: string) => Option.some(text as A))
  const expected = spec.expected ?? "a string"
  const base = Flag.String(name).pipe(
    Flag.withMetavar(spec.metavar),
    Flag.filterMap(parse, () => expected),
    Flag.withDescription(description)
  )
  const item: JsonSchema = { type: "string", ...(spec.pattern === undefined ? {} : { pattern: spec.pattern }) }
  return {
    name,
    alias: spec.alias,
    takesValue: true,
    flag: Flag.atLeast(spec.alias === undefined ? base : Flag.withAlias(base, spec.alias), 0),
    fromJson: (json) => {
      const texts =
        typeof json === "string"
          ? [json]
          : Array.isArray(json)
            ? json
            : spec.entries === true && typeof json === "object" && json !== null
              ? Object.entries(json).map(([k, v]) => (typeof v === "string" ? `${k}=${v}` : v))
              : undefined
      if (texts === undefined) {
        return Result.fail(`expected ${spec.entries === true ? "a list or an object" : "a list"}, ${got(json)}`)
      }
      const values: Array<A> = []
      for (const [i, text] of texts.entries()) {
        const parsed = typeof text === "string" ? parse(text) : Option.none()
        if (Option.isNone(parsed)) return Result.fail(`item ${i + 1}: expected ${expected}, ${got(text)}`)
        values.push(parsed.value)
      }
      return Result.succeed(values)
    },
    given: (a) => a.length > 0,
    resolve: (a) => a,
    schema: {
      description,
      anyOf: [
        item,
        { type: "array", items: item },
        ...(spec.entries === true ? [{ type: "object", additionalProperties: { type: "string" } }] : [])
      ]
    }
  }
}

/**
 * The same option with a default: `Input` holds the value, never `none`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const withDefault = <A>(
  opt: Opt<Option.Option<A>, Option.Option<A>>,
  fallback: NoInfer<A>
): Opt<Option.Option<A>, A> => ({ ...opt, resolve: Option.getOrElse(() => fallback) })
