/**
 * A slot's mailbox, as OTP's `gen_server` call: whoever wants the slot's
 * worker replaced (`restart`, a reload's surge, a recycle) posts a typed
 * intent carrying its own reply, and only the slot's fiber takes, acts and
 * answers. Each asker learns what became of its own intent: done, superseded
 * (its worker was replaced for another reason, named), failed (a surge:
 * `ReloadFailed`), or gone with the slot. Every intent is answered exactly
 * once: by the slot, or by the mailbox's closing when the slot ends.
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Queue from "effect/Queue"
import type * as Tracer from "effect/Tracer"
import type { Recycled, ReloadFailed } from "../Errors.ts"

/** Who asks, or what else replaced a worker. @internal */
export type Cause = "restart" | "reload" | "recycle" | "exit" | "unresponsive" | "not-ready"

/** What became of an intent. @internal */
export type Answer =
  /** Its worker was replaced as it asked, and the replacement runs. */
  | { readonly _tag: "Done" }
  /** Its worker was replaced for another reason (`by`) before or instead of this intent; a newer one runs. */
  | { readonly _tag: "Superseded"; readonly by: Cause }
  /** The slot ended (stopped, scaled away, finished, the supervision ended) before a newer worker ran. */
  | { readonly _tag: "Gone" }

/**
 * Replace the worker the slot had when this was asked (its `incarnation`):
 * stopped then started again (`replace`), or a surge beside it.
 *
 * @internal
 */
export interface Intent {
  readonly by: "restart" | "reload" | "recycle"
  readonly how: "replace" | "surge"
  /** The incarnation this intent is about: an older one is gone already. */
  readonly incarnation: number
  /** Why, for a recycle. */
  readonly reason?: Recycled | undefined
  /** The span the asking ran in, if any: the replacement's span links to it. */
  readonly span?: Tracer.AnySpan | undefined
  readonly reply: Deferred.Deferred<Answer, ReloadFailed>
}

/** @internal */
export interface Mailbox {
  readonly queue: Queue.Queue<Intent>
  /** An intent taken from the queue by a race, not handled yet. */
  readonly held: Array<Intent>
  /** Intents whose worker is being replaced or gone: answered once a newer worker runs, or `Gone`. */
  readonly waiting: Array<{ readonly intent: Intent; readonly answer: Answer }>
  /** Why the slot's last worker ended: what intents about it are superseded by. */
  replacedBy: Cause
}

/** @internal */
export const make = (): Effect.Effect<Mailbox> =>
  Effect.map(Queue.unbounded<Intent>(), (queue) => ({ queue, held: [], waiting: [], replacedBy: "exit" }))

/** An intent with a fresh reply. @internal */
export const intent = (fields: Omit<Intent, "reply">): Intent => ({ ...fields, reply: Deferred.makeUnsafe() })

/**
 * Answers an intent; a second answer is a defect (the slot's logic is
 * wrong), never silently dropped.
 *
 * @internal
 */
export const answer = (intent: Intent, exit: Exit.Exit<Answer, ReloadFailed>): Effect.Effect<void> =>
  Effect.suspend(() =>
    Deferred.doneUnsafe(intent.reply, exit)
      ? Effect.void
      : Effect.die(new Error(`intent answered twice (${intent.by})`))
  )

/**
 * Posts an intent, from the asker's side: one synchronous step. A closed
 * mailbox (the slot has ended) answers `Gone` at once. Then waits for the answer.
 *
 * @internal
 */
export const ask = (mailbox: Mailbox | undefined, intent: Intent): Effect.Effect<Answer, ReloadFailed> =>
  Effect.suspend(() => {
    if (mailbox === undefined || !Queue.offerUnsafe(mailbox.queue, intent)) {
      Deferred.doneUnsafe(intent.reply, Exit.succeed({ _tag: "Gone" }))
    }
    return Deferred.await(intent.reply)
  })

/** Completes once an intent is there; it stays there, so a race lost by this loses nothing. @internal */
export const arrived = (mailbox: Mailbox): Effect.Effect<void> =>
  Effect.suspend(() =>
    mailbox.held.length > 0
      ? Effect.void
      : Effect.asVoid(
          Effect.tap(Queue.take(mailbox.queue), (intent) => Effect.sync(() => mailbox.held.push(intent)))
        ).pipe(Effect.orDie)
  )

/** The next intent now, if any. @internal */
export const next = (mailbox: Mailbox): Intent | undefined => {
  const held = mailbox.held.shift()
  if (held !== undefined) return held
  const taken = Queue.takeUnsafe(mailbox.queue)
  return taken !== undefined && Exit.isSuccess(taken) ? taken.value : undefined
}

/** Every intent there now about `incarnation` (or an older one): taken, in order. @internal */
export const takeAbout = (mailbox: Mailbox, incarnation: number): Array<Intent> => {
  const all: Array<Intent> = []
  for (let i = next(mailbox); i !== undefined; i = next(mailbox)) all.push(i)
  const mine = all.filter((i) => i.incarnation <= incarnation)
  mailbox.held.push(...all.filter((i) => i.incarnation > incarnation))
  return mine
}

/** Keeps an intent to be answered with `answer` once a newer worker runs. @internal */
export const wait = (mailbox: Mailbox, intent: Intent, answer: Answer): void => {
  mailbox.waiting.push({ intent, answer })
}

/** An intent being acted on failed: answered so, no longer waiting. @internal */
export const fail = (mailbox: Mailbox, intent: Intent, error: ReloadFailed): Effect.Effect<void> =>
  Effect.suspend(() => {
    const at = mailbox.waiting.findIndex((w) => w.intent === intent)
    if (at >= 0) mailbox.waiting.splice(at, 1)
    return answer(intent, Exit.fail(error))
  })

/**
 * The slot's worker `incarnation` has ended, for `cause`: every intent about
 * it waits for the next worker, superseded; a recycle's reason is gone with
 * it, so it is answered at once.
 *
 * @internal
 */
export const ended = (mailbox: Mailbox, incarnation: number, cause: Cause): Effect.Effect<void> =>
  Effect.suspend(() => {
    mailbox.replacedBy = cause
    const superseded: Answer = { _tag: "Superseded", by: cause }
    const now: Array<Intent> = []
    for (const intent of takeAbout(mailbox, incarnation)) {
      if (intent.by === "recycle") now.push(intent)
      else wait(mailbox, intent, superseded)
    }
    return Effect.forEach(now, (i) => answer(i, Exit.succeed(superseded)), { discard: true })
  })

/** A newer worker runs: every intent waiting for one is answered. @internal */
export const running = (mailbox: Mailbox): Effect.Effect<void> =>
  Effect.suspend(() => {
    const waiting = mailbox.waiting.splice(0)
    return Effect.forEach(waiting, (w) => answer(w.intent, Exit.succeed(w.answer)), { discard: true })
  })

/**
 * The slot has ended: the mailbox takes nothing more, and every intent in it
 * or waiting is answered `Gone`. One step: an asker posts before (answered
 * here) or after (refused, answered by itself).
 *
 * @internal
 */
export const close = (mailbox: Mailbox): Effect.Effect<void> =>
  Effect.suspend(() => {
    const left: Array<Intent> = mailbox.held.splice(0)
    for (let i = next(mailbox); i !== undefined; i = next(mailbox)) left.push(i)
    Queue.shutdownUnsafe(mailbox.queue)
    left.push(...mailbox.waiting.splice(0).map((w) => w.intent))
    return Effect.forEach(left, (i) => answer(i, Exit.succeed({ _tag: "Gone" })), { discard: true })
  })
