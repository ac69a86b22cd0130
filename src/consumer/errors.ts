/** The consumer's failures as tagged classes; the tag decides retry, dead letter, or stop. */
import { Schema } from "effect"

/** The user's handler failed (or died); retried with backoff, then dead-lettered. */
export class HandlerFailed extends Schema.TaggedError<HandlerFailed>()("HandlerFailed", {
  message: Schema.String,
  cause: Schema.Defect(),
}) {}

/**
 * The handler ended the inbox transaction itself (it ran COMMIT or ROLLBACK): what it wrote
 * after that is outside the inbox's protection, and a retry would do the same again. Dead-
 * lettered at once, as `handler_failed`, with this reason in `dlq.error`.
 */
export class HandlerEndedTransaction extends Schema.TaggedError<HandlerEndedTransaction>()("HandlerEndedTransaction", {
  message: Schema.String,
}) {}

/** A message no retry can help: no usable dedup key, a malformed relay header, or a value its payload schema rejects. Dead-lettered at once. */
export class UnprocessableMessage extends Schema.TaggedError<UnprocessableMessage>()("UnprocessableMessage", {
  reason: Schema.Literals(["missing_dedup_key", "invalid_dedup_key", "invalid_header", "invalid_payload", "oversized_headers"]),
  message: Schema.String,
}) {}

/**
 * The inbox database cannot be used right now (connection lost, server starting or shutting
 * down, …): not the message's fault, so it is waited out in place and never dead-lettered.
 */
export class DatabaseUnavailable extends Schema.TaggedError<DatabaseUnavailable>()("DatabaseUnavailable", {
  code: Schema.UndefinedOr(Schema.String),
  message: Schema.String,
}) {}

/** PostgreSQL refused the inbox row for this message's values (a data error): retried like a handler failure, then dead-lettered. */
export class InboxRejected extends Schema.TaggedError<InboxRejected>()("InboxRejected", {
  code: Schema.UndefinedOr(Schema.String),
  message: Schema.String,
}) {}

/** Kafka refused or could not be reached (connect, subscribe, dead-letter publish, or the consumer crashed). */
export class ConsumerKafkaError extends Schema.TaggedError<ConsumerKafkaError>()("ConsumerKafkaError", {
  operation: Schema.String,
  message: Schema.String,
  cause: Schema.Defect(),
}) {}

/** The inbox table (or the dead-letter table of last resort) is missing from the consumer's database. */
export class InboxTableMissing extends Schema.TaggedError<InboxTableMissing>()("InboxTableMissing", {}) {
  override get message(): string {
    return "The consumer_inbox or consumer_dead_letter table does not exist: apply INBOX_TABLE_DDL (or run ensureInboxTable) in the consumer's database first."
  }
}

/** The consumer was configured with values it cannot run with. */
export class InvalidConsumerOptions extends Schema.TaggedError<InvalidConsumerOptions>()("InvalidConsumerOptions", {
  problems: Schema.Array(Schema.String),
}) {
  override get message(): string {
    return `Invalid consumer options: ${this.problems.join("; ")}`
  }
}
