/**
 * What the consumer's `process` span says about the event, so that a search by request id,
 * event type or dedup key lands on it, and the span alone tells how the message ended.
 */
import { Effect } from "effect"

interface MessageHeaders {
  readonly headers: Readonly<Record<string, string>>
}

/** Read from the relay's headers; an absent one is left out rather than tagged "". */
export const consumedEventAttributes = (message: MessageHeaders): Record<string, string> => {
  const { request_id, event_type, dedup_key } = message.headers
  // A producer other than the relay may send any size: a span carries a bounded prefix.
  const bounded = (value: string) => value.slice(0, 1024)
  return {
    ...(request_id === undefined ? {} : { request_id: bounded(request_id) }),
    ...(event_type === undefined ? {} : { event_type: bounded(event_type) }),
    ...(dedup_key === undefined ? {} : { dedup_key: bounded(dedup_key) }),
  }
}

export type ConsumerSpanOutcome =
  | { readonly _tag: "Processed"; readonly dedupKey: string; readonly attempts: number }
  | { readonly _tag: "Duplicate"; readonly dedupKey: string }
  | {
      readonly _tag: "DeadLettered"
      readonly dedupKey: string | undefined
      readonly reason: string
      readonly error: string
      readonly attempts: number
    }

const OUTCOME = { Processed: "applied", Duplicate: "duplicate", DeadLettered: "dead_lettered" } as const

/** Tags the current span with the outcome, the attempts it took and, for a dead letter, why. */
export const annotateConsumerOutcome = (outcome: ConsumerSpanOutcome): Effect.Effect<void> =>
  Effect.annotateCurrentSpan({
    "outbox.outcome": OUTCOME[outcome._tag],
    // The key the consumer deduplicated on (a custom dedupKeyOf may differ from the header).
    ...(outcome.dedupKey === undefined ? {} : { dedup_key: outcome.dedupKey }),
    ...(outcome._tag === "Duplicate" ? {} : { "outbox.attempt": outcome.attempts }),
    ...(outcome._tag === "DeadLettered"
      ? { "error.type": outcome.reason, "outbox.dead_reason": outcome.reason, "outbox.error": outcome.error }
      : {}),
  })
