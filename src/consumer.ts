/**
 * `outbox-relay/consumer`: process each event effectively once.
 *
 * ```ts
 * yield* ensureInboxTable // or apply INBOX_TABLE_DDL with your migrations
 * const consumer = yield* makeIdempotentConsumer({
 *   groupId: "search-clicks-projection",
 *   topics: ["search.click"],
 *   kafka: { clientId: "projection", brokers: ["127.0.0.1:9092"] },
 *   payload: SearchClick,
 *   handler: (event) => Effect.gen(function* () {
 *     const sql = yield* SqlClient.SqlClient // the inbox transaction
 *     yield* sql`INSERT INTO click_counts … ON CONFLICT … DO UPDATE SET clicks = click_counts.clicks + 1`
 *   }),
 * })
 * ```
 */
export { type ConsumedEvent, type ConsumedMessage, dedupKeyHeader } from "./consumer/consumed-message.ts"
export {
  type ConsumerStats,
  consumerDatabaseOutages,
  consumerDeadLetters,
  consumerDuplicates,
  consumerHandlerFailures,
  consumerInboxExpired,
  consumerKafkaRestarts,
  consumerProcessed,
} from "./consumer/consumer-stats.ts"
export type { ConsumerDeadReason } from "./consumer/dead-letter.ts"
export {
  ConsumerKafkaError,
  DatabaseUnavailable,
  HandlerFailed,
  InboxRejected,
  InboxTableMissing,
  InvalidConsumerOptions,
  UnprocessableMessage,
} from "./consumer/errors.ts"
export {
  IdempotentConsumer,
  type IdempotentConsumerHandle,
  type IdempotentConsumerOptions,
  makeIdempotentConsumer,
} from "./consumer/idempotent-consumer.ts"
export { ensureInboxTable, INBOX_TABLE_DDL } from "./consumer/inbox-table.ts"
export type { MessageOutcome } from "./consumer/process-message.ts"
export type { BackoffPolicy } from "./domain/backoff.ts"
