/**
 * The projection: clicks per search query, from search_click events. The handler is a
 * plain increment (not idempotent by itself): the inbox transaction around it is what
 * makes a redelivered click count once.
 */
import { Effect, Schema } from "effect"
import { SqlClient } from "effect/sql"
import type { ConsumedEvent } from "../../src/consumer.ts"

export const SearchClick = Schema.Struct({
  query: Schema.String,
  resultId: Schema.String,
  position: Schema.Int,
})
export type SearchClick = typeof SearchClick.Type

export const PROJECTION_DDL: ReadonlyArray<string> = [
  `CREATE TABLE IF NOT EXISTS search_click_counts (
    query         text        PRIMARY KEY,
    clicks        bigint      NOT NULL,
    last_event_id text,
    updated_at    timestamptz NOT NULL DEFAULT now()
  )`,
]

export const ensureProjectionTable = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  for (const statement of PROJECTION_DDL) yield* sql.unsafe(statement)
})

/** "Running Shoes " and "running shoes" are one query. */
export const normalizeQuery = (query: string): string => query.trim().toLowerCase().replace(/\s+/g, " ")

/** Runs inside the consumer's inbox transaction: the ambient SqlClient is that transaction. */
export const applySearchClick = Effect.fn("SearchClicks.apply")(function* (event: ConsumedEvent<SearchClick>) {
  const sql = yield* SqlClient.SqlClient
  yield* sql`
    INSERT INTO search_click_counts (query, clicks, last_event_id, updated_at)
    VALUES (${normalizeQuery(event.payload.query)}, 1, ${event.eventId}, now())
    ON CONFLICT (query) DO UPDATE
      SET clicks = search_click_counts.clicks + 1, last_event_id = excluded.last_event_id, updated_at = now()`
})
