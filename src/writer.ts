/**
 * `outbox-relay/writer`: append events to the outbox in the caller's own transaction.
 *
 * ```ts
 * const sql = yield* SqlClient.SqlClient
 * yield* sql.withTransaction(Effect.gen(function* () {
 *   yield* sql`UPDATE orders SET status = 'paid' WHERE id = ${orderId}`
 *   yield* writeEvent({ eventType: "order_paid", dedupKey: `order-${orderId}-paid`, aggregateKey: `order-${orderId}`, payload })
 * }))
 * ```
 *
 * - A second write with an existing dedup_key writes nothing and returns `{ _tag: "Duplicate" }`.
 * - request_id, when not given: the `RequestId` reference, else a `request_id` log annotation.
 * - traceparent, when not given: the writer's own span (`OutboxWriter.write`), if the call runs
 *   inside a span; `sql.withTransaction` opens one.
 * - Invalid input fails with `InvalidOutboxEvent` (every problem of the batch) before any SQL runs.
 */
export { currentRequestId, currentTraceparent, formatTraceparent, RequestId } from "./writer/correlation.ts"
export {
  type InputProblem,
  InvalidOutboxEvent,
  MaxEventBytes,
  type OutboxEventInput,
  type OutboxRow,
  type PayloadSchemas,
  toOutboxRows,
} from "./writer/event-input.ts"
export { INSERT_OUTBOX_EVENTS, type WriteResult } from "./writer/outbox-insert.ts"
export { buildOutboxInsert, type QueryableClient, type WriteOptions, writeOutboxEvents } from "./writer/pg-client.ts"
export {
  makeOutboxWriter,
  type OutboxWriter,
  type TypedEventInput,
  type WriteError,
  writeEvent,
  writeEvents,
} from "./writer/write-events.ts"
