/**
 * Effect's metrics as Prometheus text exposition format 0.0.4: what
 * `prefork --metrics` serves on `/metrics`, for every metric in the registry
 * (the supervisor's and a program's own).
 *
 * Names and units are mapped as OpenTelemetry's Prometheus compatibility
 * specification says, so a metric scraped here has the name it would have
 * had through an OpenTelemetry Collector:
 *
 * - characters outside `[a-zA-Z0-9_:]` become `_` (`prefork.workers` →
 *   `prefork_workers`), runs of `_` become one;
 * - the `unit` attribute (or Effect's `time_unit`) is a suffix, in words
 *   (`s` → `_seconds`, `By` → `_bytes`, `By/s` → `_bytes_per_second`,
 *   `1` → `_ratio` on gauges), annotations in braces (`{restart}`) are
 *   dropped, and it is neither a label nor repeated when the name already
 *   ends with it;
 * - monotonic counters (`incremental: true`) and frequencies are counters
 *   with `_total`; a counter that may go down is an OpenTelemetry
 *   UpDownCounter, which Prometheus sees as a gauge;
 * - histograms have cumulative `_bucket{le=…}` series ending with `+Inf`,
 *   `_sum` and `_count`; summaries their `quantile` series (`NaN` while
 *   empty), `_sum` and `_count`; a frequency one counter series per key
 *   (label `key`).
 *
 * Label names are made valid the same way (a leading digit gets `key_`, a
 * leading `__` gets `key`); label values and HELP text are escaped. Series
 * whose name and labels repeat another's, and metrics whose name another
 * metric of a different kind already took, are left out rather than making
 * the whole exposition invalid.
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"

/**
 * The `Content-Type` of the text format.
 */
export const CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

type Kind = "counter" | "gauge" | "histogram" | "summary"

// UCUM units (OpenTelemetry) to the words Prometheus names end with, as the Collector's translator maps them.
const UNITS: Readonly<Record<string, string>> = {
  d: "days",
  h: "hours",
  min: "minutes",
  s: "seconds",
  ms: "milliseconds",
  us: "microseconds",
  ns: "nanoseconds",
  By: "bytes",
  KiBy: "kibibytes",
  MiBy: "mebibytes",
  GiBy: "gibibytes",
  TiBy: "tebibytes",
  KBy: "kilobytes",
  MBy: "megabytes",
  GBy: "gigabytes",
  TBy: "terabytes",
  m: "meters",
  V: "volts",
  A: "amperes",
  J: "joules",
  W: "watts",
  g: "grams",
  Cel: "celsius",
  Hz: "hertz",
  "%": "percent"
}

const PER_UNITS: Readonly<Record<string, string>> = {
  s: "second",
  m: "minute",
  h: "hour",
  d: "day",
  w: "week",
  mo: "month",
  y: "year"
}

/** `[a-zA-Z0-9_:]` only, one `_` for each run of others, no `_` at either end, not starting with a digit. */
const metricName = (text: string): string => {
  const name = text
    .replace(/[^a-zA-Z0-9_:]+/g, "_")
    .replace(/__+/g, "_")
    .replace(/^_|_$/g, "")
  return /^[0-9]/.test(name) ? `_${name}` : name.length === 0 ? "_" : name
}

/** The unit as a name suffix (without its `_`), or "" for none. */
export const unitSuffix = (unit: string | undefined, kind: Kind): string => {
  if (unit === undefined) return ""
  const bare = unit.replace(/\{[^}]*\}/g, "").trim()
  if (bare === "1") return kind === "gauge" ? "ratio" : ""
  if (bare.length === 0) return ""
  const slash = bare.indexOf("/")
  const main = slash === -1 ? bare : bare.slice(0, slash)
  const per = slash === -1 ? "" : bare.slice(slash + 1)
  const words = [
    main.length > 0 ? (UNITS[main] ?? main) : "",
    per.length > 0 ? `per_${PER_UNITS[per] ?? UNITS[per] ?? per}` : ""
  ]
  return metricName(words.filter((w) => w.length > 0).join("_")).replace(/^_+/, "")
}

/**
 * The Prometheus name of a metric: its id made valid, then the unit, then
 * `_total` for a counter.
 */
export const prometheusName = (id: string, unit: string | undefined, kind: Kind, monotonic: boolean): string => {
  let name = metricName(id)
  if (monotonic) name = name.replace(/_total$/, "")
  const suffix = unitSuffix(unit, kind)
  if (suffix.length > 0 && name !== suffix && !name.endsWith(`_${suffix}`)) name = `${name}_${suffix}`
  return monotonic ? `${name}_total` : name
}

/** A label name: `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with the reserved `__`. */
export const labelName = (key: string): string => {
  const name = key.replace(/[^a-zA-Z0-9_]/g, "_")
  if (name.length === 0) return "key_"
  if (/^[0-9]/.test(name)) return `key_${name}`
  return name.startsWith("__") ? `key${name}` : name
}

/** A label value between double quotes: `\`, `"` and line feeds escaped. */
export const escapeLabelValue = (value: string): string =>
  value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")

/** HELP text: `\` and line feeds escaped. */
export const escapeHelp = (text: string): string => text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")

/** A sample value as Prometheus reads it (Go's `ParseFloat`): `NaN`, `+Inf`, `-Inf`, or the number. */
export const formatValue = (value: number | bigint): string => {
  if (typeof value === "bigint") return value.toString()
  if (Number.isNaN(value)) return "NaN"
  if (value === Infinity) return "+Inf"
  if (value === -Infinity) return "-Inf"
  return String(value)
}

/** `{a="1",b="2"}`, or "" for none. */
const renderLabels = (labels: ReadonlyArray<readonly [string, string]>): string =>
  labels.length === 0 ? "" : `{${labels.map(([k, v]) => `${k}="${escapeLabelValue(v)}"`).join(",")}}`

/**
 * The labels of a series: its attributes but the unit, with valid names, in
 * name order; attributes whose names became the same have their values
 * joined with `;` (in the order of their original keys), as OpenTelemetry
 * says. `reserved` labels (`le`, `quantile`) a metric adds itself are
 * renamed `exported_…` when an attribute has them.
 */
const labelsOf = (
  attributes: Metric.Metric.AttributeSet | undefined,
  reserved: ReadonlyArray<string>
): Array<readonly [string, string]> => {
  const byName = new Map<string, Array<readonly [string, string]>>()
  for (const [key, value] of Object.entries(attributes ?? {})) {
    if (key === "unit" || key === "time_unit") continue
    let name = labelName(key)
    if (reserved.includes(name)) name = `exported_${name}`
    const entries = byName.get(name) ?? []
    entries.push([key, String(value)])
    byName.set(name, entries)
  }
  return [...byName.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([name, entries]) => [
      name,
      entries
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
        .map(([, v]) => v)
        .join(";")
    ])
}

const kindOf = (snapshot: Metric.Metric.Snapshot): Kind => {
  switch (snapshot.type) {
    case "Counter":
      return snapshot.state.incremental ? "counter" : "gauge"
    case "Frequency":
      return "counter"
    case "Gauge":
      return "gauge"
    case "Histogram":
      return "histogram"
    case "Summary":
      return "summary"
  }
}

const unitOf = (snapshot: Metric.Metric.Snapshot): string | undefined =>
  snapshot.attributes?.["unit"] ?? snapshot.attributes?.["time_unit"]

interface Family {
  readonly name: string
  readonly kind: Kind
  help: string | undefined
  readonly lines: Array<string>
  /** The label sets already written: a repeated one would make the exposition invalid. */
  readonly seen: Set<string>
}

/** The sample lines of one series (one snapshot): each line `[suffix, labels, value]`. */
const samples = (
  snapshot: Metric.Metric.Snapshot
): { readonly key: string; readonly lines: ReadonlyArray<readonly [string, string, string]> } => {
  switch (snapshot.type) {
    case "Counter": {
      const labels = labelsOf(snapshot.attributes, [])
      return { key: renderLabels(labels), lines: [["", renderLabels(labels), formatValue(snapshot.state.count)]] }
    }
    case "Gauge": {
      const labels = labelsOf(snapshot.attributes, [])
      return { key: renderLabels(labels), lines: [["", renderLabels(labels), formatValue(snapshot.state.value)]] }
    }
    case "Frequency": {
      const labels = labelsOf(snapshot.attributes, ["key"])
      const lines = [...snapshot.state.occurrences].map(
        ([word, count]) => ["", renderLabels(sortLabels([...labels, ["key", word]])), formatValue(count)] as const
      )
      return { key: renderLabels(labels), lines }
    }
    case "Histogram": {
      const labels = labelsOf(snapshot.attributes, ["le"])
      const { buckets, count, sum } = snapshot.state
      const lines: Array<readonly [string, string, string]> = []
      // Effect's buckets are cumulative already; a boundary given twice, or +Inf, is written once.
      let previous = -Infinity
      let cumulative = 0
      for (const [boundary, upTo] of [...buckets].sort(([a], [b]) => a - b)) {
        cumulative = Math.max(cumulative, upTo)
        if (boundary === Infinity || Number.isNaN(boundary)) continue
        if (boundary === previous) {
          lines[lines.length - 1] = [
            "_bucket",
            renderLabels(sortLabels([...labels, ["le", formatValue(boundary)]])),
            formatValue(cumulative)
          ]
          continue
        }
        previous = boundary
        lines.push([
          "_bucket",
          renderLabels(sortLabels([...labels, ["le", formatValue(boundary)]])),
          formatValue(cumulative)
        ])
      }
      lines.push(["_bucket", renderLabels(sortLabels([...labels, ["le", "+Inf"]])), formatValue(count)])
      lines.push(["_sum", renderLabels(labels), formatValue(sum)])
      lines.push(["_count", renderLabels(labels), formatValue(count)])
      return { key: renderLabels(labels), lines }
    }
    case "Summary": {
      const labels = labelsOf(snapshot.attributes, ["quantile"])
      const { quantiles, count, sum } = snapshot.state
      const lines: Array<readonly [string, string, string]> = quantiles.map(
        ([q, value]) =>
          ["", renderLabels(sortLabels([...labels, ["quantile", formatValue(q)]])), formatValue(value ?? NaN)] as const
      )
      lines.push(["_sum", renderLabels(labels), formatValue(sum)])
      lines.push(["_count", renderLabels(labels), formatValue(count)])
      return { key: renderLabels(labels), lines }
    }
  }
}

const sortLabels = (labels: Array<readonly [string, string]>): Array<readonly [string, string]> =>
  labels.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))

/**
 * The text exposition of these metrics: one `# HELP` (when the metric has a
 * description) and one `# TYPE` line per metric family, families in name
 * order, series in registry order. Empty for no metrics.
 */
export const encode = (snapshots: ReadonlyArray<Metric.Metric.Snapshot>): string => {
  const families = new Map<string, Family>()
  for (const snapshot of snapshots) {
    const kind = kindOf(snapshot)
    const monotonic = kind === "counter"
    const name = prometheusName(snapshot.id, unitOf(snapshot), kind, monotonic)
    let family = families.get(name)
    if (family === undefined) {
      family = { name, kind, help: undefined, lines: [], seen: new Set() }
      families.set(name, family)
    } else if (family.kind !== kind) {
      // Another kind of metric took this name first: writing both would make the exposition invalid.
      continue
    }
    const series = samples(snapshot)
    if (family.seen.has(series.key)) continue
    family.seen.add(series.key)
    if (family.help === undefined && snapshot.description !== undefined && snapshot.description.length > 0) {
      family.help = snapshot.description
    }
    for (const [suffix, labels, value] of series.lines) family.lines.push(`${name}${suffix}${labels} ${value}`)
  }
  let text = ""
  for (const family of [...families.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    if (family.help !== undefined) text += `# HELP ${family.name} ${escapeHelp(family.help)}\n`
    text += `# TYPE ${family.name} ${family.kind}\n`
    for (const line of family.lines) text += `${line}\n`
  }
  return text
}

/**
 * The text exposition of every metric in the current context's registry.
 */
export const format: Effect.Effect<string> = Effect.map(Metric.snapshot, encode)
