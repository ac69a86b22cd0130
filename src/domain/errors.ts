/**
 * Every failure the relay knows, as tagged classes. The tag decides the route:
 * retryable Kafka errors → FAILED with backoff; permanent ones → dead-letter topic;
 * database errors → the loop backs off and reconnects; schema problems → refuse to start.
 */
import { Schema } from "effect"

/**
 * Why Kafka could not take records now. Classified once, where kafkajs throws; from there
 * on the code matches on the tag and reason and never reads `cause` again.
 * - `unreachable`: no broker answered, or it answered with a transient error (leader moved, …);
 * - `timeout`: the request ran past PUBLISH_TIMEOUT_MS (records may have landed);
 * - `producer_broken`: the idempotent producer's sequence or id state is broken, so it is replaced.
 */
export const UnavailableReason = Schema.Literals(["unreachable", "timeout", "producer_broken"])
export type UnavailableReason = typeof UnavailableReason.Type

/**
 * The broker could not take the request now (down, timeout, leader moved, network). It halts
 * publishing: nothing else is sent until a broker answers, and no other row burns an attempt.
 */
export class KafkaUnavailable extends Schema.TaggedError<KafkaUnavailable>()("KafkaUnavailable", {
  reason: UnavailableReason,
  message: Schema.String,
  cause: Schema.Defect(),
}) {
  get haltsPublishing(): boolean {
    return true
  }
}

/**
 * The broker has none of these topics. Only their records wait (a topic may be created later;
 * attempts count, so an unmapped topic ends as a dead letter): the others go on.
 */
export class KafkaUnknownTopic extends Schema.TaggedError<KafkaUnknownTopic>()("KafkaUnknownTopic", {
  topics: Schema.Array(Schema.String),
  message: Schema.String,
  cause: Schema.Defect(),
}) {
  get haltsPublishing(): boolean {
    return false
  }
}

/** Kafka refused a record for a reason no retry fixes (too large, invalid record): it alone is dead-lettered. */
export class KafkaRejected extends Schema.TaggedError<KafkaRejected>()("KafkaRejected", {
  reason: Schema.Literals(["message_too_large", "invalid_record"]),
  message: Schema.String,
  cause: Schema.Defect(),
}) {
  get haltsPublishing(): boolean {
    return false
  }
}

/** Every way a publish can fail. */
export type KafkaPublishError = KafkaUnavailable | KafkaUnknownTopic | KafkaRejected

/** Why an event was dead-lettered; stored in `dead_reason` and sent as the `dlq.reason` header. */
export const DeadReason = Schema.Literals([
  "unknown_event_type",
  "message_too_large",
  "invalid_record",
  "attempts_exhausted",
  // The dead-letter topic refused even the trimmed dead letter: the row keeps everything for replay.
  "dlq_rejected",
  // PostgreSQL refused this row's mark (a data error: a value out of range, an index entry too
  // large); the row is settled DEAD with its columns brought within ROW_LIMITS.
  "unmarkable",
  // The row broke a ROW_LIMITS bound when the constraints were added (migration 7); settled then.
  "out_of_limits",
])
export type DeadReason = typeof DeadReason.Type

/** A row that cannot become a Kafka record at all (bad headers, unmapped type): no retry can fix it. */
export class InvalidEvent extends Schema.TaggedError<InvalidEvent>()("InvalidEvent", {
  reason: DeadReason,
  message: Schema.String,
}) {}

/** Whose fault a database error is (see database-fault.ts): decides wait, retry, isolate or fail loudly. */
export const DatabaseFault = Schema.Literals(["outage", "conflict", "data", "programming"])

export class DatabaseError extends Schema.TaggedError<DatabaseError>()("DatabaseError", {
  operation: Schema.String,
  message: Schema.String,
  fault: DatabaseFault,
  /** PostgreSQL's SQLSTATE, when the server sent one. */
  sqlState: Schema.optional(Schema.String),
  cause: Schema.Defect(),
}) {}

/** The database's outbox schema is not the one this build understands. */
export class SchemaVersionMismatch extends Schema.TaggedError<SchemaVersionMismatch>()("SchemaVersionMismatch", {
  found: Schema.Number,
  expected: Schema.Number,
}) {
  override get message(): string {
    return this.found < this.expected
      ? `The outbox schema is at version ${this.found}, this relay needs version ${this.expected}: run \`outbox-relay migrate\` first.`
      : `The outbox schema is at version ${this.found}, newer than this relay understands (${this.expected}): upgrade the relay.`
  }
}
