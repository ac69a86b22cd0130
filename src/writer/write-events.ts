/**
 * The Effect writer: appends events to the outbox through the ambient `SqlClient`, so a
 * caller's `sql.withTransaction(...)` covers the event and the business change alike:
 * both commit, or neither does.
 */
import { Effect, Result, type Schema } from "effect"
import { SqlClient, type SqlError } from "effect/sql"
import { currentRequestId, currentTraceparent } from "./correlation.ts"
import { type InvalidOutboxEvent, MaxEventBytes, type OutboxEventInput, type PayloadSchemas, toOutboxRows } from "./event-input.ts"
import { INSERT_OUTBOX_EVENTS, type InsertedRow, insertParameters, toWriteResults, type WriteResult } from "./outbox-insert.ts"

export type WriteError = InvalidOutboxEvent | SqlError.SqlError

const SPAN = { kind: "producer", attributes: { "messaging.system": "kafka", "messaging.operation.type": "create" } } as const

const insertChecked = (
  inputs: ReadonlyArray<OutboxEventInput>,
  options: { readonly schemas?: PayloadSchemas | undefined; readonly requireSchema?: boolean | undefined },
) =>
  Effect.gen(function* () {
    const defaults = { requestId: yield* currentRequestId, traceparent: yield* currentTraceparent }
    const rows = toOutboxRows(inputs, { ...options, defaults, maxEventBytes: yield* MaxEventBytes })
    if (Result.isFailure(rows)) return yield* rows.failure
    if (rows.success.length === 0) return []
    const sql = yield* SqlClient.SqlClient
    const inserted = yield* sql.unsafe<InsertedRow>(INSERT_OUTBOX_EVENTS, insertParameters(rows.success))
    const results = toWriteResults(rows.success, inserted)
    yield* Effect.annotateCurrentSpan({
      "outbox.events": inputs.length,
      "outbox.duplicates": results.filter((r) => r._tag === "Duplicate").length,
    })
    return results
  })

/**
 * Appends one event. `Duplicate` means an event with this dedup_key exists already
 * (nothing was written, the existing event is not compared or changed).
 */
export const writeEvent: (input: OutboxEventInput) => Effect.Effect<WriteResult, WriteError, SqlClient.SqlClient> = Effect.fn(
  "OutboxWriter.write",
  SPAN,
)(function* (input: OutboxEventInput) {
  const [result] = yield* insertChecked([input], {})
  return result!
})

/** Appends many events with one statement; one result per input, in input order. */
export const writeEvents: (
  inputs: ReadonlyArray<OutboxEventInput>,
) => Effect.Effect<ReadonlyArray<WriteResult>, WriteError, SqlClient.SqlClient> = Effect.fn(
  "OutboxWriter.writeAll",
  SPAN,
)(function* (inputs: ReadonlyArray<OutboxEventInput>) {
  return yield* insertChecked(inputs, {})
})

/** The events a typed writer accepts: one of its event types, with that type's payload. */
export type TypedEventInput<S extends PayloadSchemas> = {
  readonly [K in keyof S & string]: OutboxEventInput<K, Schema.Schema.Type<S[K]>>
}[keyof S & string]

export interface OutboxWriter<S extends PayloadSchemas> {
  readonly write: (input: TypedEventInput<S>) => Effect.Effect<WriteResult, WriteError, SqlClient.SqlClient>
  readonly writeAll: (
    inputs: ReadonlyArray<TypedEventInput<S>>,
  ) => Effect.Effect<ReadonlyArray<WriteResult>, WriteError, SqlClient.SqlClient>
}

/**
 * A writer that knows its event types: each payload is checked against (and encoded
 * with) its type's schema, and an event type without a schema is refused.
 */
export const makeOutboxWriter = <const S extends PayloadSchemas>(schemas: S): OutboxWriter<S> => ({
  write: Effect.fn(
    "OutboxWriter.write",
    SPAN,
  )(function* (input: TypedEventInput<S>) {
    const [result] = yield* insertChecked([input], { schemas, requireSchema: true })
    return result!
  }),
  writeAll: Effect.fn(
    "OutboxWriter.writeAll",
    SPAN,
  )(function* (inputs: ReadonlyArray<TypedEventInput<S>>) {
    return yield* insertChecked(inputs, { schemas, requireSchema: true })
  }),
})
