import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import { deleteExpiredSent } from "../../src/outbox/retention.ts"
import { sqlLayer, testDatabase } from "../support/test-database.ts"

describe("retention", () => {
  it.live("deletes only SENT rows older than the retention, in batches, reading no row created after the cutoff", () =>
    Effect.gen(function* () {
      const db = yield* testDatabase()
      yield* Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        // 12 000 expired SENT rows (more than two delete batches), plus rows that must survive.
        yield* sql`
          INSERT INTO outbox_event (dedup_key, event_type, payload, status, created_at, sent_at)
          SELECT 'old-' || g, 'search_click', '{}', 'SENT', now() - interval '8 days 1 minute', now() - interval '8 days'
            FROM generate_series(1, 12000) g`
        yield* sql`
          INSERT INTO outbox_event (dedup_key, event_type, payload, status, created_at, sent_at, dead_reason)
          VALUES ('old-dead', 'search_click', '{}', 'DEAD', now() - interval '9 days', NULL, 'unknown_event_type'),
                 ('recent-sent', 'search_click', '{}', 'SENT', now() - interval '6 days', now() - interval '6 days', NULL),
                 -- Created before the cutoff, sent after it: not expired, though old.
                 ('old-but-recently-sent', 'search_click', '{}', 'SENT', now() - interval '10 days', now() - interval '1 day', NULL),
                 ('pending', 'search_click', '{}', 'NEW', now(), NULL, NULL)`
        // Written by a long transaction: a higher id than newer rows, but expired too.
        yield* sql`
          INSERT INTO outbox_event (dedup_key, event_type, payload, status, created_at, sent_at)
          VALUES ('old-late-id', 'search_click', '{}', 'SENT', now() - interval '8 days', now() - interval '8 days')`
        const deleted = yield* deleteExpiredSent(7 * 86_400_000)
        // old-late-id sits above the first row created after the cutoff: it waits for a later pass.
        expect(deleted).toBe(12_000)
        const left = yield* sql<{ dedup_key: string }>`SELECT dedup_key FROM outbox_event ORDER BY dedup_key`
        expect(left.map((r) => r.dedup_key)).toEqual(["old-but-recently-sent", "old-dead", "old-late-id", "pending", "recent-sent"])
        // Once the rows below it are gone or old enough, the bound passes it.
        yield* sql`DELETE FROM outbox_event WHERE dedup_key IN ('recent-sent', 'pending')`
        expect(yield* deleteExpiredSent(7 * 86_400_000)).toBe(1)
      }).pipe(Effect.provide(sqlLayer(db.url)), Effect.orDie)
    }),
  )
})
