/**
 * A worker's piped stdout or stderr, read line by line into a sink, at the
 * sink's pace.
 *
 * - Each complete line goes to the sink without its `\n` (nor a `\r` before
 *   it), in order; the unterminated rest goes to it when the stream ends, so
 *   a crashing worker's last words are kept. UTF-8 characters split across
 *   chunks are decoded whole. A line longer than 1 MiB is passed on in
 *   pieces, so a worker that never writes a newline cannot grow the primary's
 *   memory.
 * - When the sink returns an `Effect`, the stream is paused until that effect
 *   completes (and no other line is delivered meanwhile): the pipe fills, and
 *   the worker's writes wait (backpressure) instead of the primary buffering
 *   without bound.
 * - Without a sink the stream is still read, and dropped: a worker never
 *   blocks on a full pipe nobody reads.
 */
import type { Readable } from "node:stream"
import { StringDecoder } from "node:string_decoder"
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"

/** The longest piece of a line passed on at once, in UTF-16 code units. */
const MAX_LINE = 1 << 20

/** @internal */
export interface Reader {
  /**
   * Stops reading: interrupts a sink effect still running and closes the
   * stream (the worker is gone, and nobody waits for its last lines any more).
   */
  readonly interrupt: () => void
}

/**
 * Reads `stream` into `sink`. `run` starts a sink's effect (in the context of
 * the supervisor that owns the worker) and returns its fiber.
 *
 * @internal
 */
export const read = (
  stream: Readable,
  sink: ((line: string) => void | Effect.Effect<void>) | undefined,
  run: (effect: Effect.Effect<void>) => Fiber.Fiber<void>
): Reader => {
  if (sink === undefined) {
    stream.resume()
    stream.on("error", () => {})
    return { interrupt: () => stream.destroy() }
  }
  const decoder = new StringDecoder("utf8")
  /** Lines decoded but not yet delivered, oldest first; `next` is the first undelivered one. */
  let lines: Array<string> = []
  let next = 0
  let partial = ""
  let ended = false
  let closed = false
  let running: Fiber.Fiber<void> | undefined

  /** Delivers queued lines until one returns an effect (then waits for it) or none is left. */
  const deliver = (): void => {
    if (closed) return
    while (next < lines.length) {
      const result = sink(lines[next++]!)
      if (Effect.isEffect(result)) {
        stream.pause()
        const fiber = run(result)
        running = fiber
        fiber.addObserver(() => {
          running = undefined
          deliver()
        })
        return
      }
    }
    lines = []
    next = 0
    if (ended) {
      // The final unterminated line, once: a sink's effect for it completes with nothing more to read.
      ended = false
      const rest = partial + decoder.end()
      partial = ""
      if (rest.length > 0) {
        lines.push(rest)
        deliver()
      }
      return
    }
    stream.resume()
  }

  stream.on("data", (chunk: Buffer) => {
    const text = partial + decoder.write(chunk)
    let start = 0
    for (let nl = text.indexOf("\n"); nl !== -1; nl = text.indexOf("\n", start)) {
      lines.push(text.slice(start, nl > start && text.charCodeAt(nl - 1) === 13 ? nl - 1 : nl))
      start = nl + 1
    }
    partial = text.slice(start)
    while (partial.length > MAX_LINE) {
      lines.push(partial.slice(0, MAX_LINE))
      partial = partial.slice(MAX_LINE)
    }
    if (running === undefined) deliver()
  })
  stream.on("end", () => {
    ended = true
    if (running === undefined) deliver()
  })
  // A read error ends the stream ('close' follows); what was not a complete line is lost.
  stream.on("error", () => {})
  return {
    interrupt: () => {
      closed = true
      lines = []
      running?.interruptUnsafe()
      stream.destroy()
    }
  }
}
