/**
 * A worker's IPC channel must never be able to crash its primary.
 *
 * Node parses what a child writes to its channel inside the channel handle's
 * `onread` callback, and the JSON parser throws on a line that is not JSON:
 * the exception escapes into the event loop and kills the primary (measured
 * here: a worker writing raw bytes to its channel fd, exit 1). A line without
 * a newline is buffered whole, however long it grows. Both are in Node's
 * internals (`internal/child_process`: `setupChannel` keeps the handle under
 * a symbol described `kChannelHandle` on the `ChildProcess`;
 * `internal/child_process/serialization`: the partial line under
 * `kJSONBuffer` on the handle).
 *
 * {@link guard} wraps that `onread`: a throw, or a partial message above
 * 1 MiB, is the worker's fault. It also reads at most one chunk per turn of
 * the event loop, so a flood of well-formed messages cannot starve the
 * primary's timers (measured, a worker writing `{}` lines as fast as it can
 * for 3 s: a 10 ms interval in the primary fired 8 times, its worst gap
 * 840 ms; with one chunk per turn, 118 times, worst gap 86 ms). The channel then stops being read, its buffer
 * is dropped, and `onFault` is told why (the spawner logs it and SIGKILLs the
 * worker, which is restarted as a crash). The internals are looked up
 * defensively: when they are not found (another Node version), nothing is
 * wrapped and the behaviour is Node's own.
 */
import type { ChildProcess } from "node:child_process"

/** The longest partial message a worker may leave in its channel's buffer. */
const MAX_PENDING = 1 << 20

interface ChannelHandle {
  onread: (this: ChannelHandle, ...args: Array<unknown>) => unknown
  readStart?: () => unknown
  readStop?: () => unknown
  buffering?: boolean
  [key: symbol]: unknown
}

const symbolNamed = (object: object, description: string): symbol | undefined =>
  Object.getOwnPropertySymbols(object).find((symbol) => symbol.description === description)

/** Node's channel handle of `child`, if it has one and it looks as expected. */
const channelHandle = (child: ChildProcess): { handle: ChannelHandle; isOpen: () => boolean } | undefined => {
  const key = symbolNamed(child, "kChannelHandle")
  if (key === undefined) return undefined
  const slots = child as unknown as Record<symbol, unknown>
  const handle = slots[key]
  if (typeof handle !== "object" || handle === null || typeof (handle as ChannelHandle).onread !== "function") {
    return undefined
  }
  // Node clears the slot when the channel is disconnected (and the handle closed).
  return { handle: handle as ChannelHandle, isOpen: () => slots[key] === handle }
}

/**
 * Wraps the channel of `child` (call it synchronously after `spawn`/`fork`,
 * before any read). Returns `false` when the channel or Node's internals were
 * not found and nothing was wrapped.
 *
 * @internal
 */
export const guard = (child: ChildProcess, onFault: (reason: string) => void): boolean => {
  const found = channelHandle(child)
  if (found === undefined) return false
  const { handle, isOpen } = found
  const original = handle.onread
  // JSON channels (the default) keep the partial line as a string; "advanced" ones count buffered bytes.
  const jsonBuffer = symbolNamed(handle, "kJSONBuffer")
  const messageBuffer = symbolNamed(handle, "kMessageBuffer")
  const messageBufferSize = symbolNamed(handle, "kMessageBufferSize")
  const pending = (): number => {
    if (jsonBuffer !== undefined) {
      const buffered = handle[jsonBuffer]
      return typeof buffered === "string" ? buffered.length : 0
    }
    if (messageBufferSize !== undefined) {
      const size = handle[messageBufferSize]
      return typeof size === "number" ? size : 0
    }
    return 0
  }
  let faulted = false
  const fault = (reason: string) => {
    faulted = true
    try {
      handle.readStop?.()
    } catch {
      // already closed
    }
    // Drop what was buffered, and let a later `disconnect()` close the channel at once.
    if (jsonBuffer !== undefined) handle[jsonBuffer] = ""
    if (messageBuffer !== undefined) handle[messageBuffer] = []
    if (messageBufferSize !== undefined) handle[messageBufferSize] = 0
    handle.buffering = false
    onFault(reason)
  }
  let paused = false
  const resume = () => {
    paused = false
    if (!faulted && isOpen()) handle.readStart?.()
  }
  handle.onread = function (this: ChannelHandle, ...args: Array<unknown>) {
    if (faulted) return
    try {
      original.apply(this, args)
    } catch (error) {
      const detail = error instanceof Error ? error.message : String(error)
      return fault(`wrote bytes to its IPC channel that are not a message (${detail.slice(0, 120)})`)
    }
    if (pending() > MAX_PENDING) {
      return fault(`wrote more than ${MAX_PENDING} bytes to its IPC channel without ending a message`)
    }
    // One chunk per turn of the event loop (libuv would read up to 32 in a row): a worker flooding its
    // channel with messages slows itself down (its writes wait), not the primary's timers.
    if (args[0] !== undefined && !paused && isOpen()) {
      paused = true
      handle.readStop?.()
      setImmediate(resume)
    }
  }
  return true
}
