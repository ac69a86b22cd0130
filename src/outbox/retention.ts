/**
 * Deletes SENT rows older than RETENTION in small batches, so the table and its indexes
 * level off instead of growing forever. Small batches keep each transaction short (no long
 * lock, no burst of WAL), and SKIP LOCKED lets several instances clean side by side.
 */
import { Duration, Effect, Layer, Schedule } from "effect"
import { SqlClient } from "effect/sql"
import { RelayConfig } from "../config/config.ts"
import { toDatabaseError } from "./sql-error.ts"

const BATCH = 5_000
const EVERY = Duration.minutes(1)

/** One pass: deletes until fewer than a full batch is left; returns how many rows went. */
export const deleteExpiredSent = Effect.fn("Retention.deleteExpiredSent")(function* (retentionMs: number) {
  const sql = yield* SqlClient.SqlClient
  let total = 0
  for (;;) {
    // A row created after the cutoff cannot have been sent before it (sent_at >= created_at),
    // and ids grow with created_at. So only ids below the first row created after the cutoff
    // are read: when nothing has expired that is the first row, and the pass costs nothing
    // however much SENT history the table keeps (scanning it for `sent_at < cutoff` would
    // read the whole table every minute). A row written by a transaction that ran for long
    // may sit above the bound with an older created_at; it goes once the bound passes it.
    const deleted = yield* sql`
      WITH cutoff AS (
        SELECT now() - make_interval(secs => ${retentionMs / 1000}) AS at
      ), bound AS (
        SELECT coalesce(
          (SELECT id FROM outbox_event WHERE created_at >= (SELECT at FROM cutoff) ORDER BY id LIMIT 1),
          9223372036854775807) AS id
      ), expired AS (
        SELECT id FROM outbox_event
         WHERE id < (SELECT id FROM bound)
           AND status = 'SENT' AND sent_at < (SELECT at FROM cutoff)
         ORDER BY id
         LIMIT ${BATCH}
         FOR UPDATE SKIP LOCKED
      )
      DELETE FROM outbox_event o USING expired WHERE o.id = expired.id
      RETURNING 1`.pipe(
      Effect.map((rows) => rows.length),
      Effect.mapError(toDatabaseError("retention")),
    )
    total += deleted
    if (deleted < BATCH) return total
    yield* Effect.sleep("50 millis")
  }
})

/** The background loop: a pass a minute, failures logged and retried at the next pass. */
export const retentionLoop = Effect.gen(function* () {
  const config = yield* RelayConfig
  if (config.retention === 0) return yield* Effect.logInfo("retention off (RETENTION=0): SENT rows are kept")
  yield* deleteExpiredSent(config.retention).pipe(
    Effect.tap((n) =>
      n > 0 ? Effect.logInfo("retention deleted expired SENT rows").pipe(Effect.annotateLogs({ count: n })) : Effect.void,
    ),
    Effect.catch((e) =>
      Effect.logWarning("retention pass failed; trying again at the next").pipe(Effect.annotateLogs({ error: e.message })),
    ),
    Effect.repeat(Schedule.spaced(EVERY)),
  )
})

/** Retention in the background for the layer's lifetime. */
export const RetentionLive = Layer.effectDiscard(Effect.forkScoped(retentionLoop))
