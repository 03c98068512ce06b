/**
 * A dependency-free SVG chart: one row per system, every sample as a dot,
 * the interquartile range as a box, the median as a thick line and the p95
 * as a tick, on a shared millisecond axis.
 */
import { percentile, stats } from "./common.ts"

export interface Series {
  readonly label: string
  readonly values: ReadonlyArray<number>
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]

const escape = (s: string): string => s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;")

const niceStep = (range: number): number => {
  const raw = range / 6
  const mag = 10 ** Math.floor(Math.log10(raw))
  const norm = raw / mag
  return (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * mag
}

export const stripChart = (options: {
  readonly title: string
  readonly subtitle?: string | undefined
  readonly unit: string
  readonly series: ReadonlyArray<Series>
}): string => {
  const labelW = 150
  const plotW = 560
  const rowH = 56
  const top = options.subtitle ? 62 : 46
  const bottom = 62
  const width = labelW + plotW + 30
  const height = top + rowH * options.series.length + bottom
  const all = options.series.flatMap((s) => s.values).filter((v) => Number.isFinite(v))
  const maxV = all.length === 0 ? 1 : Math.max(...all)
  const step = niceStep(Math.max(1, maxV))
  const axisMax = Math.ceil((maxV * 1.05) / step) * step
  const x = (v: number) => labelW + (v / axisMax) * plotW
  const parts: Array<string> = []
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">${escape(options.title)}</text>`
  )
  if (options.subtitle) {
    parts.push(`<text x="${width / 2}" y="40" text-anchor="middle" fill="#555">${escape(options.subtitle)}</text>`)
  }
  const axisY = top + rowH * options.series.length
  for (let v = 0; v <= axisMax + 1e-9; v += step) {
    const px = x(v).toFixed(1)
    parts.push(
      `<line x1="${px}" y1="${top}" x2="${px}" y2="${axisY}" stroke="#e4e4e4"/>`,
      `<text x="${px}" y="${axisY + 16}" text-anchor="middle" fill="#333">${Number(v.toPrecision(6))}</text>`
    )
  }
  parts.push(
    `<line x1="${labelW}" y1="${axisY}" x2="${labelW + plotW}" y2="${axisY}" stroke="#333"/>`,
    `<text x="${labelW + plotW / 2}" y="${axisY + 34}" text-anchor="middle" fill="#333">${escape(options.unit)}</text>`
  )
  options.series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length]!
    const cy = top + rowH * i + rowH / 2
    const st = stats(s.values)
    parts.push(
      `<text x="${labelW - 10}" y="${cy - 3}" text-anchor="end" font-weight="bold">${escape(s.label)}</text>`,
      `<text x="${labelW - 10}" y="${cy + 12}" text-anchor="end" fill="#555" font-size="10">median ${st.median.toFixed(1)}, n=${st.n}</text>`
    )
    if (st.n === 0) return
    const q1 = percentile(s.values, 0.25)
    const q3 = percentile(s.values, 0.75)
    parts.push(
      `<rect x="${x(q1).toFixed(1)}" y="${cy - 14}" width="${Math.max(1, x(q3) - x(q1)).toFixed(1)}" height="28" fill="${color}" fill-opacity="0.15" stroke="${color}"/>`
    )
    // Deterministic jitter, so the same data draws the same picture.
    s.values.forEach((v, k) => {
      if (!Number.isFinite(v)) return
      const jitter = (((k * 2654435761) % 1000) / 1000 - 0.5) * 22
      parts.push(
        `<circle cx="${x(v).toFixed(1)}" cy="${(cy + jitter).toFixed(1)}" r="2.2" fill="${color}" fill-opacity="0.55"/>`
      )
    })
    parts.push(
      `<line x1="${x(st.median).toFixed(1)}" y1="${cy - 18}" x2="${x(st.median).toFixed(1)}" y2="${cy + 18}" stroke="${color}" stroke-width="3"/>`,
      `<line x1="${x(st.p95).toFixed(1)}" y1="${cy - 9}" x2="${x(st.p95).toFixed(1)}" y2="${cy + 9}" stroke="${color}" stroke-width="1.5" stroke-dasharray="3,2"/>`
    )
  })
  parts.push(
    `<text x="${labelW + plotW}" y="${height - 6}" text-anchor="end" fill="#777" font-size="10">box: p25–p75 · thick line: median · dashed tick: p95 · dots: samples</text>`,
    "</svg>"
  )
  return `${parts.join("\n")}\n`
}
