/**
 * The writer for services not on Effect: the same checks and the same statement, run on
 * any client with `query(text, values)` (node-postgres' Client or PoolClient, …). Run it
 * on the client that holds your transaction (after BEGIN, before COMMIT).
 */
import { Result } from "effect"
import { type OutboxEventInput, toOutboxRows } from "./event-input.ts"
import { INSERT_OUTBOX_EVENTS, type InsertedRow, insertParameters, toWriteResults, type WriteResult } from "./outbox-insert.ts"

export interface QueryableClient {
  query(text: string, values: ReadonlyArray<unknown>): Promise<{ readonly rows: ReadonlyArray<unknown> }>
}

export interface WriteOptions {
  /** The largest event accepted, payload and headers as JSON text (default 1,000,000 bytes, the relay's MAX_RECORD_BYTES). */
  readonly maxEventBytes?: number | undefined
}

/** The statement and its parameters, for clients other than node-postgres. Throws InvalidOutboxEvent. */
export const buildOutboxInsert = (
  inputs: ReadonlyArray<OutboxEventInput>,
  options: WriteOptions = {},
): { readonly text: string; readonly values: ReadonlyArray<string> } => {
  const rows = toOutboxRows(inputs, options)
  if (Result.isFailure(rows)) throw rows.failure
  return { text: INSERT_OUTBOX_EVENTS, values: insertParameters(rows.success) }
}

/** Appends events on `client`; rejects with InvalidOutboxEvent before touching the database. */
export const writeOutboxEvents = async (
  client: QueryableClient,
  inputs: ReadonlyArray<OutboxEventInput>,
  options: WriteOptions = {},
): Promise<ReadonlyArray<WriteResult>> => {
  const rows = toOutboxRows(inputs, options)
  if (Result.isFailure(rows)) throw rows.failure
  if (rows.success.length === 0) return []
  const { rows: inserted } = await client.query(INSERT_OUTBOX_EVENTS, insertParameters(rows.success))
  return toWriteResults(rows.success, inserted as ReadonlyArray<InsertedRow>)
}
