/** The dead-letter record: the original key, value and headers, plus why and when it died. */
import type { DeadReason } from "../domain/errors.ts"
import type { ClaimedEvent } from "../domain/outbox-event.ts"
import type { OutboundRecord } from "./records.ts"

export interface DeadLetter {
  readonly event: ClaimedEvent
  readonly reason: DeadReason
  readonly error: string
  /** The record the event would have been, when it could be built at all. */
  readonly original: OutboundRecord | undefined
  /** The topic its event type maps to, if any. */
  readonly originalTopic: string | undefined
}

/**
 * `full`: the original value and headers. `trimmed`: only the relay's own headers and the
 * dlq.* ones, no value: what is left when the dead-letter topic refuses the full letter
 * (the row keeps everything for replay). An event too large to be read is always trimmed,
 * and says its size (`dlq.size_bytes`) and its largest column (`dlq.oversize_column`); its
 * headers carry the stand-ins the claim fetched for columns beyond their bounds.
 */
export type DeadLetterShape = "full" | "trimmed"

export const deadLetterRecord = (letter: DeadLetter, dlqTopic: string, failedAtMs: number, shape: DeadLetterShape): OutboundRecord => {
  const { event, original } = letter
  const trimmed = shape === "trimmed" || event.oversize !== null
  const relayHeaders: Record<string, string> = {
    event_id: event.eventId,
    dedup_key: event.dedupKey,
    event_type: event.eventType,
    ...(event.requestId === null ? {} : { request_id: event.requestId }),
  }
  const headers: Record<string, string> = {
    ...(trimmed ? relayHeaders : (original?.headers ?? relayHeaders)),
    "dlq.reason": letter.reason,
    "dlq.error": letter.error.slice(0, 1000),
    "dlq.attempts": String(event.attempts + 1),
    "dlq.original_topic": letter.originalTopic ?? "",
    "dlq.failed_at": new Date(failedAtMs).toISOString(),
  }
  if (trimmed) {
    headers["dlq.value_omitted"] = "true"
    headers["dlq.headers_omitted"] = "true"
  }
  if (event.oversize !== null) {
    headers["dlq.size_bytes"] = String(event.oversize.bytes)
    headers["dlq.oversize_column"] = event.oversize.column
  }
  return {
    topic: dlqTopic,
    key: original?.key ?? event.aggregateKey ?? event.dedupKey,
    value: trimmed ? null : event.payload,
    headers,
  }
}
