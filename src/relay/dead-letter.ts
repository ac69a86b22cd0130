/** The dead-letter record: the original key, value and headers, plus why and when it died. */
import type { DeadReason } from "../domain/errors.ts"
import type { ClaimedEvent } from "../domain/outbox-event.ts"
import type { OutboundRecord } from "../kafka/records.ts"

export interface DeadLetter {
  readonly event: ClaimedEvent
  readonly reason: DeadReason
  readonly error: string
  /** The record the event would have been, when it could be built at all. */
  readonly original: OutboundRecord | undefined
}

export const deadLetterRecord = (
  letter: DeadLetter,
  dlqTopic: string,
  failedAt: Date,
  options: { readonly omitValue: boolean } = { omitValue: false },
): OutboundRecord => {
  const { event, original } = letter
  const headers: Record<string, string> = {
    ...(original?.headers ?? {
      event_id: event.eventId,
      dedup_key: event.dedupKey,
      event_type: event.eventType,
      ...(event.requestId === null ? {} : { request_id: event.requestId }),
    }),
    "dlq.reason": letter.reason,
    "dlq.error": letter.error.slice(0, 1000),
    "dlq.attempts": String(event.attempts + 1),
    "dlq.original_topic": original?.topic ?? "",
    "dlq.failed_at": failedAt.toISOString(),
  }
  // A value too large for its topic is likely too large for the DLQ too; the row keeps it for replay.
  if (options.omitValue) headers["dlq.value_omitted"] = "true"
  return {
    topic: dlqTopic,
    key: original?.key ?? event.aggregateKey ?? event.dedupKey,
    value: options.omitValue ? null : event.payload,
    headers,
  }
}
