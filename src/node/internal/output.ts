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
 * - Once the worker has exited, `finish` tells when everything it wrote has
 *   been delivered (the sink's last effect completed too), so that its exit
 *   can be reported after its last words. A process outside the worker that
 *   holds the pipe open cannot delay that for long: see `finish`.
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
  /**
   * Calls `onDrained` once, when every line of the stream has been delivered
   * and the stream has ended (or was interrupted); call it once the writer has
   * exited. The wait is bounded for a pipe something else keeps open or
   * writing to: it ends after `budgetMillis` spent waiting for more bytes
   * (the time a sink's effect runs does not count: a slow sink delays it,
   * the pipe's holder does not), or after {@link MAX_AFTER_EXIT} more bytes.
   * Lines read later are still delivered, after `onDrained`.
   */
  readonly finish: (budgetMillis: number, onDrained: () => void) => void
}

/**
 * The most bytes `finish` waits for: what an exited writer can have left in
 * the pipe (64 KiB by default, at most 1 MiB as `fs.pipe-max-size` lets an
 * unprivileged process grow it) and in the stream's buffer, with room to spare.
 */
const MAX_AFTER_EXIT = 2 << 20

/** The `Reader` of a stream nobody reads lines from: nothing to wait for. */
const dropping = (stream: Readable): Reader => {
  stream.resume()
  stream.on("error", () => {})
  return { interrupt: () => stream.destroy(), finish: (_, onDrained) => onDrained() }
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
  if (sink === undefined) return dropping(stream)
  const decoder = new StringDecoder("utf8")
  /** Lines decoded but not yet delivered, oldest first; `next` is the first undelivered one. */
  let lines: Array<string> = []
  let next = 0
  let partial = ""
  /** The stream ended (or closed); `rested`: its unterminated rest was queued. */
  let ended = false
  let rested = false
  let closed = false
  let running: Fiber.Fiber<void> | undefined
  /** Waiting for `finish`: its callback, the budget left for waiting on more bytes, the bytes read since. */
  let finishing: { readonly onDrained: () => void; budget: number; bytes: number } | undefined
  /** Since when, and until when, the reader waits for bytes while `finish` waits for it. */
  let waiting: { readonly since: number; readonly timer: ReturnType<typeof setTimeout> } | undefined

  const stopWaiting = () => {
    if (waiting === undefined) return
    clearTimeout(waiting.timer)
    if (finishing !== undefined) finishing.budget -= performance.now() - waiting.since
    waiting = undefined
  }
  /** Calls `finish`'s callback, once. */
  const drained = () => {
    stopWaiting()
    const onDrained = finishing?.onDrained
    finishing = undefined
    onDrained?.()
  }
  /** The reader waits for bytes: it spends `finish`'s budget meanwhile. */
  const startWaiting = () => {
    if (finishing === undefined || waiting !== undefined) return
    waiting = { since: performance.now(), timer: setTimeout(drained, Math.max(0, finishing.budget)) }
  }

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
    if (!ended) {
      stream.resume()
      return startWaiting()
    }
    if (!rested) {
      // The final unterminated line, once: a crashing worker's last words.
      rested = true
      const rest = partial + decoder.end()
      partial = ""
      if (rest.length > 0) {
        lines.push(rest)
        return deliver()
      }
    }
    drained()
  }

  stream.on("data", (chunk: Buffer) => {
    stopWaiting()
    if (finishing !== undefined && (finishing.bytes += chunk.length) > MAX_AFTER_EXIT) drained()
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
  // The end, or a read error ('close' without 'end'): what was read is delivered, the unterminated rest too.
  const end = () => {
    if (ended) return
    ended = true
    stopWaiting()
    if (running === undefined) deliver()
  }
  stream.on("end", end)
  stream.on("close", end)
  stream.on("error", () => {})
  return {
    interrupt: () => {
      closed = true
      lines = []
      running?.interruptUnsafe()
      stream.destroy()
      drained()
    },
    finish: (budgetMillis, onDrained) => {
      if (closed || (rested && running === undefined && next >= lines.length)) return onDrained()
      finishing = { onDrained, budget: budgetMillis, bytes: 0 }
      if (running === undefined && !ended) startWaiting()
    }
  }
}
