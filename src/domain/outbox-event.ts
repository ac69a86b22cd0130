import type { DeadReason } from "./errors.ts"

/**
 * A row whose dead letter could not be published earlier (the dead-letter topic was missing
 * or unreachable): it is FAILED with `dead_reason` set, and is retried only for its letter.
 */
export interface WaitingDeadLetter {
  readonly reason: DeadReason
  readonly error: string
}

/** An outbox row as the relay holds it between claim and mark. */
export interface ClaimedEvent {
  /** bigint identity, kept as text: JavaScript numbers cannot hold every bigint. */
  readonly id: string
  readonly eventId: string
  readonly dedupKey: string
  readonly eventType: string
  readonly aggregateKey: string | null
  /** The jsonb payload as JSON text: it is the message value as is, so it is never parsed. */
  readonly payload: string
  /** The jsonb headers column as JSON text; validated when the record is built. */
  readonly headers: string
  /**
   * Set when the row is larger than the relay can carry (MAX_RECORD_BYTES, counted over every
   * column that goes into the record): the event can only be dead-lettered. The claim did not
   * fetch its payload and headers (empty stand-ins here), nor any text column beyond its bound
   * (its first 64 characters and its size stand in for it).
   */
  readonly oversize: Oversize | null
  readonly requestId: string | null
  readonly traceparent: string | null
  /** Failed publish attempts so far. */
  readonly attempts: number
  /** Set when the event is already dead and only its dead letter is still to be published. */
  readonly waitingDeadLetter: WaitingDeadLetter | null
  readonly createdAtMs: number
  /** Set when this claim took the row over from another instance whose lease had expired. */
  readonly takenOverFrom: string | null
  /**
   * This claim's lease (its expiry, as the store wrote it). Marks and releases must match it,
   * so a late mark from an earlier claim of the same row, even by this instance, changes nothing.
   */
  readonly lease: string
}

/** The columns of a row that go into its Kafka record, by their names in the table. */
export type RecordColumn = "payload" | "headers" | "event_type" | "aggregate_key" | "dedup_key" | "request_id" | "traceparent"

export interface Oversize {
  /** The row's record columns together, in bytes (UTF-8 text; the key counted once more as a header). */
  readonly bytes: number
  /** The largest of them: what the operator must look at. */
  readonly column: RecordColumn
}

export type EventStatus = "NEW" | "SENT" | "FAILED" | "DEAD"

/** Where Kafka put a record. */
export interface Delivery {
  readonly topic: string
  readonly partition: number
  readonly offset: string
}

/** An event to append to the outbox (what a service writes). */
export interface NewEvent {
  readonly dedupKey: string
  readonly eventType: string
  readonly aggregateKey?: string | null | undefined
  readonly payload: unknown
  readonly headers?: Readonly<Record<string, string>> | undefined
  readonly requestId?: string | null | undefined
  readonly traceparent?: string | null | undefined
}
