/**
 * What the relay can carry from one outbox row, as bounds the table itself enforces (CHECK
 * constraints, migration 7) and the writer checks first with the same numbers. Each bound
 * leaves room for the index entries the column takes part in (a btree entry must stay under
 * ~2.7 kB) and for every mark the relay writes, so no bounded row can make a mark fail.
 * Text bounds are in bytes (octet_length), which is what indexes and Kafka count.
 */
export const ROW_LIMITS = {
  /** Selects the topic (Kafka topic names stop at 249); indexed in outbox_event_dead_idx. */
  eventTypeBytes: 255,
  /** The Kafka key and the unit of ordering; indexed in outbox_event_pending_key_idx. */
  aggregateKeyBytes: 1024,
  /** Unique: indexed in the dedup_key unique index. */
  dedupKeyBytes: 1024,
  /** A correlation id, carried as a header and a log annotation. */
  requestIdBytes: 256,
  /** A W3C traceparent is 55 characters in version 00; later versions may append fields. */
  traceparentBytes: 256,
  /**
   * Attempts of a pending row. Retry counts the relay writes stay far below it (MAX_ATTEMPTS is
   * at most 1,000); a settled row (SENT, DEAD) may hold one more, for the mark that settled it.
   */
  maxAttempts: 1_000_000,
  /** What the relay stores of an error message (last_error). */
  lastErrorChars: 2_000,
} as const

export type RowLimits = typeof ROW_LIMITS
