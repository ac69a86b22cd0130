/**
 * The one INSERT statement both writer forms run, and how its RETURNING rows become
 * per-event results. The whole batch travels as one jsonb parameter: one round trip, and
 * no driver has to type an array column that happens to hold only nulls.
 */
import type { OutboxRow } from "./event-input.ts"

export type WriteResult =
  | { readonly _tag: "Inserted"; readonly dedupKey: string; readonly id: string; readonly eventId: string }
  | { readonly _tag: "Duplicate"; readonly dedupKey: string }

/**
 * `->` keeps a JSON null payload as jsonb 'null' (the column is NOT NULL; the relay sends
 * it as the value "null"), while `->>` turns JSON nulls into SQL NULLs for the text
 * columns. ORDER BY ordinality gives the ids in input order, so events of one
 * aggregate_key written in one batch are relayed in the order they were given.
 * A dedup_key that already exists (committed, or being inserted by a concurrent
 * transaction, which this statement then waits for) is skipped, not an error.
 */
export const INSERT_OUTBOX_EVENTS = `
INSERT INTO outbox_event (dedup_key, event_type, aggregate_key, payload, headers, request_id, traceparent)
SELECT e.doc->>'dedup_key', e.doc->>'event_type', e.doc->>'aggregate_key', e.doc->'payload',
       coalesce(e.doc->'headers', '{}'::jsonb), e.doc->>'request_id', e.doc->>'traceparent'
  FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS e(doc, ord)
 ORDER BY e.ord
ON CONFLICT (dedup_key) DO NOTHING
RETURNING id::text AS id, event_id::text AS event_id, dedup_key`

export interface InsertedRow {
  readonly id: string
  readonly event_id: string
  readonly dedup_key: string
}

/**
 * The rows to send: the first event of each dedup_key in the batch. Later ones are
 * duplicates by definition and never reach the database, so which one wins is the
 * caller's order, not PostgreSQL's.
 */
export const firstPerDedupKey = (rows: ReadonlyArray<OutboxRow>): ReadonlyArray<OutboxRow> => {
  const seen = new Set<string>()
  return rows.filter((r) => !seen.has(r.dedup_key) && seen.add(r.dedup_key) !== undefined)
}

export const insertParameters = (rows: ReadonlyArray<OutboxRow>): ReadonlyArray<string> => [JSON.stringify(firstPerDedupKey(rows))]

/** One result per input event, in input order. */
export const toWriteResults = (rows: ReadonlyArray<OutboxRow>, inserted: ReadonlyArray<InsertedRow>): ReadonlyArray<WriteResult> => {
  const byKey = new Map(inserted.map((r) => [r.dedup_key, r]))
  return rows.map((row): WriteResult => {
    const hit = byKey.get(row.dedup_key)
    if (hit === undefined) return { _tag: "Duplicate", dedupKey: row.dedup_key }
    // A batch repeating a key: the first occurrence is the insert, the others its duplicates.
    byKey.delete(row.dedup_key)
    return { _tag: "Inserted", dedupKey: row.dedup_key, id: hit.id, eventId: hit.event_id }
  })
}
