/**
 * Header names that belong to the relay: the ones it writes on every record, and the dead-letter
 * namespace. Compared without case: Kafka header names are case-sensitive, but a consumer that
 * looks up `dedup_key` through a case-insensitive map (or a person reading kcat output) would
 * otherwise meet a row's `DEDUP_KEY` next to the relay's own. The writer refuses them; the relay
 * drops them from a row inserted by plain SQL, so its own are the only ones on the record.
 */
const RELAY_HEADERS: ReadonlySet<string> = new Set(["event_id", "dedup_key", "event_type", "request_id", "traceparent"])
const DEAD_LETTER_PREFIX = "dlq."

export const isReservedHeader = (name: string): boolean => {
  const lower = name.toLowerCase()
  return RELAY_HEADERS.has(lower) || lower.startsWith(DEAD_LETTER_PREFIX)
}
