/**
 * What to do with a claimed batch, decided before anything is sent: a pure function of the
 * events, the keys held back and the policy. Nothing here touches the network or the clock,
 * so it is tested alone with generated batches.
 *
 * Each event, in id order, takes exactly one route:
 * - given back untried: its key is held back (an earlier batch of this pipeline left an event
 *   of that key unsent), or an earlier event of its key in this batch was given back;
 * - a dead letter first: it can never be a record (unknown type, bad headers, too large), its
 *   attempts ran out earlier, or it is already dead and only its letter is still to be sent;
 * - a record to send.
 */
import type { DeadReason } from "../domain/errors.ts"
import { type TopicMap, topicFor } from "../domain/event-types.ts"
import type { ClaimedEvent } from "../domain/outbox-event.ts"
import type { DeadLetter } from "../kafka/dead-letter-record.ts"
import { buildRecord, isValidTraceparent, type OutboundRecord } from "../kafka/records.ts"

export interface Publishable {
  readonly event: ClaimedEvent
  readonly record: OutboundRecord
}

export interface PublishPlan {
  /** Sent before any record: a later event of a dead event's key goes out only once its letter is on the DLQ. */
  readonly deadLetters: ReadonlyArray<DeadLetter>
  readonly records: ReadonlyArray<Publishable>
  readonly givenBack: ReadonlyArray<ClaimedEvent>
  /** Events whose traceparent is malformed: they are published without it. */
  readonly invalidTraceparents: ReadonlyArray<ClaimedEvent>
}

export interface PlanPolicy {
  readonly topicMap: TopicMap
  readonly maxRecordBytes: number
  readonly maxAttempts: number
}

const deadLetter = (event: ClaimedEvent, reason: DeadReason, error: string, topicMap: TopicMap, original?: OutboundRecord): DeadLetter => ({
  event,
  reason,
  error,
  original,
  originalTopic: topicFor(topicMap, event.eventType),
})

export const planBatch = (
  events: ReadonlyArray<ClaimedEvent>,
  holdBack: (event: ClaimedEvent) => boolean,
  policy: PlanPolicy,
): PublishPlan => {
  const deadLetters: Array<DeadLetter> = []
  const records: Array<Publishable> = []
  const givenBack: Array<ClaimedEvent> = []
  const invalidTraceparents: Array<ClaimedEvent> = []
  const givenBackKeys = new Set<string>()
  for (const event of events) {
    const key = event.aggregateKey
    if ((key !== null && givenBackKeys.has(key)) || holdBack(event)) {
      givenBack.push(event)
      if (key !== null) givenBackKeys.add(key)
      continue
    }
    const built = buildRecord(event, policy.topicMap, policy.maxRecordBytes)
    const original = built._tag === "Success" ? built.success : undefined
    if (event.waitingDeadLetter !== null) {
      deadLetters.push(deadLetter(event, event.waitingDeadLetter.reason, event.waitingDeadLetter.error, policy.topicMap, original))
    } else if (event.attempts >= policy.maxAttempts) {
      // Rows from before dead letters could wait in their own state: attempts ran out, no letter yet.
      deadLetters.push(deadLetter(event, "attempts_exhausted", `gave up after ${event.attempts} attempts`, policy.topicMap, original))
    } else if (built._tag === "Failure") {
      deadLetters.push(deadLetter(event, built.failure.reason, built.failure.message, policy.topicMap))
    } else {
      if (event.traceparent !== null && !isValidTraceparent(event.traceparent)) invalidTraceparents.push(event)
      records.push({ event, record: built.success })
    }
  }
  return { deadLetters, records, givenBack, invalidTraceparents }
}
