import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import { deleteExpiredSent } from "../../src/outbox/retention.ts"
import { sqlLayer, testDatabase } from "../support/test-database.ts"

describe("retention", () => {
  it.live("deletes only SENT rows older than the retention, in batches, and keeps everything else", () =>
    Effect.gen(function* () {
      const db = yield* testDatabase()
      yield* Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        // 12 000 expired SENT rows (more than two delete batches), plus rows that must survive.
        yield* sql`
          INSERT INTO outbox_event (dedup_key, event_type, payload, status, sent_at)
          SELECT 'old-' || g, 'search_click', '{}', 'SENT', now() - interval '8 days' FROM generate_series(1, 12000) g`
        yield* sql`
          INSERT INTO outbox_event (dedup_key, event_type, payload, status, sent_at, dead_reason)
          VALUES ('recent-sent', 'search_click', '{}', 'SENT', now() - interval '6 days', NULL),
                 ('old-dead', 'search_click', '{}', 'DEAD', NULL, 'unknown_event_type'),
                 ('pending', 'search_click', '{}', 'NEW', NULL, NULL)`
        const deleted = yield* deleteExpiredSent(7 * 86_400_000)
        expect(deleted).toBe(12_000)
        const left = yield* sql<{ dedup_key: string }>`SELECT dedup_key FROM outbox_event ORDER BY dedup_key`
        expect(left.map((r) => r.dedup_key)).toEqual(["old-dead", "pending", "recent-sent"])
      }).pipe(Effect.provide(sqlLayer(db.url)), Effect.orDie)
    }),
  )
})
