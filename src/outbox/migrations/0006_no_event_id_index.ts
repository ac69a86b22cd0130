/**
 * Drops the unique index on event_id. Every SENT mark is an update PostgreSQL cannot make HOT
 * (status is in the pending indexes' predicates), so it adds an entry to every index of the
 * table; this one served nothing: the relay, its tools and its consumers never look a row up by
 * event_id (consumers dedupe on dedup_key, which stays unique), and the database generates
 * every event_id itself (a UUIDv7: a millisecond timestamp and 74 random bits), so uniqueness
 * needs no index to hold. Measured (`bench --postgres-levers`, claim + SENT mark of 100k rows,
 * median of 2 in one run): 35.7 -> 27.5 µs of PostgreSQL CPU per event, 20.5k -> 26.1k rows/s.
 */
export const statements: ReadonlyArray<string> = [`ALTER TABLE outbox_event DROP CONSTRAINT IF EXISTS outbox_event_event_id_key`]
