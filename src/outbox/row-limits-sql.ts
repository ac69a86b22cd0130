/**
 * ROW_LIMITS in SQL: the CHECK constraints that make the table refuse what the relay cannot
 * carry, and the SET clause that brings a row back within them. A NOT VALID constraint is
 * still checked on every UPDATE, so a row that broke a bound before the constraint existed
 * can take no mark at all until it is brought within: that is what settling it does.
 */
import { ROW_LIMITS } from "../domain/row-limits.ts"

const L = ROW_LIMITS

/** A jsonb object whose values are all strings (the only headers Kafka can carry). */
const HEADERS_ARE_STRINGS = `jsonb_typeof(headers) = 'object' AND NOT jsonb_path_exists(headers, '$.* ? (@.type() != "string")')`

/** Constraint name → condition. Names are part of the schema: PostgreSQL's errors quote them. */
export const ROW_CHECKS: ReadonlyArray<readonly [name: string, condition: string]> = [
  ["outbox_event_event_type_bytes", `octet_length(event_type) <= ${L.eventTypeBytes}`],
  ["outbox_event_aggregate_key_bytes", `octet_length(aggregate_key) <= ${L.aggregateKeyBytes}`],
  ["outbox_event_dedup_key_bytes", `octet_length(dedup_key) <= ${L.dedupKeyBytes}`],
  ["outbox_event_request_id_bytes", `octet_length(request_id) <= ${L.requestIdBytes}`],
  ["outbox_event_traceparent_bytes", `octet_length(traceparent) <= ${L.traceparentBytes}`],
  ["outbox_event_headers_strings", HEADERS_ARE_STRINGS],
  // The mark that settles a row (DEAD, or SENT) adds one attempt to whatever the pending row held.
  ["outbox_event_attempts_range", `attempts BETWEEN 0 AND ${L.maxAttempts} + CASE WHEN status IN ('SENT', 'DEAD') THEN 1 ELSE 0 END`],
  ["outbox_event_next_attempt_finite", `isfinite(next_attempt_at)`],
  ["outbox_event_locked_until_finite", `isfinite(locked_until)`],
]

// left() counts characters; a character is at most 4 bytes in UTF-8.
const clip = (column: string, bytes: number) =>
  `${column} = CASE WHEN octet_length(${column}) > ${bytes} THEN left(${column}, ${Math.floor(bytes / 4)}) ELSE ${column} END`

/**
 * Assignments that satisfy every ROW_CHECKS condition, whatever the row held: over-long text
 * is cut (dedup_key, which is unique, keeps an md5 of its whole value so cut keys stay
 * distinct), headers that are not an object of strings are dropped (the payload is kept), and
 * out-of-range numbers and infinite times are clamped. Used only to settle a row DEAD.
 */
export const WITHIN_LIMITS_SET = [
  clip("event_type", L.eventTypeBytes),
  `dedup_key = CASE WHEN octet_length(dedup_key) > ${L.dedupKeyBytes} THEN left(dedup_key, 200) || ' md5:' || md5(dedup_key) ELSE dedup_key END`,
  clip("aggregate_key", L.aggregateKeyBytes),
  clip("request_id", L.requestIdBytes),
  clip("traceparent", L.traceparentBytes),
  `headers = CASE WHEN ${HEADERS_ARE_STRINGS} THEN headers ELSE '{}'::jsonb END`,
  `attempts = least(greatest(attempts, 0), ${L.maxAttempts})`,
  `next_attempt_at = CASE WHEN isfinite(next_attempt_at) THEN next_attempt_at ELSE now() END`,
].join(",\n       ")

/** The names of the bounds a row breaks, for its settling reason (`{}` when none). */
export const BROKEN_CHECKS = `array_remove(ARRAY[${ROW_CHECKS.map(([name, condition]) => `CASE WHEN (${condition}) IS FALSE THEN '${name}' END`).join(", ")}], NULL)`
