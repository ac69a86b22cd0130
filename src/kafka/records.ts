/** Turns a claimed outbox row into the Kafka record consumers rely on: topic, key, value, headers. */
import { Result } from "effect"
import { InvalidEvent } from "../domain/errors.ts"
import { type TopicMap, topicFor } from "../domain/event-types.ts"
import type { ClaimedEvent, RecordColumn } from "../domain/outbox-event.ts"
import { isReservedHeader } from "../domain/reserved-headers.ts"

export interface OutboundRecord {
  readonly topic: string
  readonly key: string
  readonly value: string | null
  readonly headers: Readonly<Record<string, string>>
}

/** Lowercase hex from `from` to `to` (exclusive); with `nonZero`, not all zeros. */
const isHex = (s: string, from: number, to: number, nonZero: boolean): boolean => {
  let zeros = true
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i)
    if (c === 48) continue // "0"
    if (!((c > 48 && c <= 57) || (c >= 97 && c <= 102))) return false
    zeros = false
  }
  return !(nonZero && zeros)
}

/**
 * W3C trace context, version 00: 32 hex trace id and 16 hex span id, neither all zeros
 * (`^00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$`). Checked per event on the
 * relay's hot path, where that regular expression cost ~2 % of the relay's CPU.
 */
export const isValidTraceparent = (s: string): boolean =>
  s.length === 55 &&
  s.startsWith("00-") &&
  s.charCodeAt(35) === 45 &&
  s.charCodeAt(52) === 45 &&
  isHex(s, 3, 35, true) &&
  isHex(s, 36, 52, true) &&
  isHex(s, 53, 55, false)

/**
 * The row's own headers: a JSON object whose values are strings, numbers or booleans. Names
 * the relay reserves, in any case, are left out (the relay writes its own).
 */
const readOwnHeaders = (json: string): Result.Result<Record<string, string>, string> => {
  // Most rows carry no headers of their own: no JSON.parse for them.
  if (json === "{}") return Result.succeed({})
  let parsed: unknown
  try {
    parsed = JSON.parse(json)
  } catch {
    return Result.fail("headers column is not valid JSON")
  }
  if (parsed === null) return Result.succeed({})
  if (typeof parsed !== "object" || Array.isArray(parsed)) return Result.fail("headers column must be a JSON object")
  const out: Record<string, string> = {}
  for (const [k, v] of Object.entries(parsed)) {
    if (isReservedHeader(k)) continue
    if (typeof v === "string") out[k] = v
    else if (typeof v === "number" || typeof v === "boolean") out[k] = String(v)
    else return Result.fail(`header "${k}" must be a string, number or boolean`)
  }
  return Result.succeed(out)
}

/**
 * The record for one event. A row's own header with a reserved name (`DEDUP_KEY`, `dlq.reason`,
 * …) is dropped, so a row cannot spoof event_id or dedup_key, nor sit beside them. An invalid traceparent is dropped (reported by
 * the caller), never a reason to lose the event.
 */
export const buildRecord = (
  event: ClaimedEvent,
  topics: TopicMap,
  maxRecordBytes: number = Number.POSITIVE_INFINITY,
): Result.Result<OutboundRecord, InvalidEvent> => {
  if (event.oversize !== null) return Result.fail(tooLarge(event.oversize.bytes, maxRecordBytes, event.oversize.column))
  const topic = topicFor(topics, event.eventType)
  if (topic === undefined) {
    return Result.fail(
      new InvalidEvent({
        reason: "unknown_event_type",
        message: `event_type "${event.eventType}" has no topic (set TOPIC_MAP to route it)`,
      }),
    )
  }
  const own = readOwnHeaders(event.headers)
  if (Result.isFailure(own)) return Result.fail(new InvalidEvent({ reason: "invalid_record", message: own.failure }))
  const headers: Record<string, string> = {
    ...own.success,
    event_id: event.eventId,
    dedup_key: event.dedupKey,
    event_type: event.eventType,
  }
  if (event.requestId !== null) headers.request_id = event.requestId
  if (event.traceparent !== null && isValidTraceparent(event.traceparent)) headers.traceparent = event.traceparent
  const record: OutboundRecord = { topic, key: event.aggregateKey ?? event.dedupKey, value: event.payload, headers }
  // Checked before sending: a record the broker refuses spends the idempotent producer's
  // sequence numbers, and would cost the records around it a retry.
  if (recordChars(record) * 3 <= maxRecordBytes) return Result.succeed(record) // UTF-8 takes ≤ 3 bytes per UTF-16 unit
  const bytes = recordBytes(record)
  return bytes > maxRecordBytes ? Result.fail(tooLarge(bytes, maxRecordBytes)) : Result.succeed(record)
}

const recordChars = (record: OutboundRecord): number => {
  let n = record.key.length + (record.value?.length ?? 0)
  for (const name in record.headers) n += name.length + record.headers[name]!.length
  return n
}

/** Key, value and headers as UTF-8, which is what a record's size limit counts (framing aside). */
export const recordBytes = (record: OutboundRecord): number => {
  let n = Buffer.byteLength(record.key) + (record.value === null ? 0 : Buffer.byteLength(record.value))
  for (const name in record.headers) n += Buffer.byteLength(name) + Buffer.byteLength(record.headers[name]!)
  return n
}

const tooLarge = (bytes: number, limit: number, column?: RecordColumn) =>
  new InvalidEvent({
    reason: "message_too_large",
    message: `event is ${bytes} bytes, over MAX_RECORD_BYTES (${limit})${column === undefined ? "" : `; its largest column is ${column}`}`,
  })
