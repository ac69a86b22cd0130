/** Bulk rows for the benchmark, generated inside PostgreSQL so seeding never dominates a run. */
import { Effect } from "effect"
import { DEFAULT_EVENT_TYPES } from "../../src/domain/event-types.ts"
import { withSql } from "./bench-env.ts"

/** About 200 bytes, like a search event. The same bytes everywhere: ceilings and drains send identical messages. */
export const PAYLOAD = {
  query: "trail running shoes waterproof",
  results: 24,
  position: 3,
  session: "s-6c1f0e2a",
  locale: "de-DE",
  ab: ["ranker-v7", "facets-b"],
  ts: "2026-11-27T00:00:00.000Z",
}

const CHUNK = 100_000

/**
 * `count` rows with status NEW (a backlog), or SENT (history), keyed over `keys` aggregates.
 * `settle: false` skips the closing VACUUM and CHECKPOINT, for a seed that another follows.
 */
export const seedRows = (url: string, options: { count: number; status: "NEW" | "SENT"; keys: number; prefix: string; settle?: boolean }) =>
  withSql(url, (sql) =>
    Effect.gen(function* () {
      const types = `{${DEFAULT_EVENT_TYPES.join(",")}}`
      for (let from = 0; from < options.count; from += CHUNK) {
        const to = Math.min(options.count, from + CHUNK) - 1
        yield* sql`
          INSERT INTO outbox_event (dedup_key, event_type, aggregate_key, payload, headers, request_id, traceparent,
                                    status, sent_at, kafka_topic, kafka_partition, kafka_offset)
          SELECT ${options.prefix} || '-' || g,
                 (${types}::text[])[1 + g % ${DEFAULT_EVENT_TYPES.length}],
                 'key-' || (g % ${options.keys}),
                 ${JSON.stringify(PAYLOAD)}::jsonb,
                 '{}'::jsonb,
                 'req-' || g,
                 '00-' || lpad(to_hex(g + 1), 32, '0') || '-' || lpad(to_hex(g + 1), 16, '0') || '-01',
                 ${options.status},
                 CASE WHEN ${options.status} = 'SENT' THEN now() - interval '1 day' END,
                 CASE WHEN ${options.status} = 'SENT' THEN 'history' END,
                 CASE WHEN ${options.status} = 'SENT' THEN 0 END,
                 CASE WHEN ${options.status} = 'SENT' THEN g END
            FROM generate_series(${from}::bigint, ${to}::bigint) AS g`
      }
      // VACUUM sets hint bits and the visibility map as autovacuum would have on a live table,
      // and the CHECKPOINT keeps the seed's WAL from forcing one (with full-page writes for
      // every page the relay then touches) in the middle of the measured run.
      if (options.settle === false) return
      yield* sql`VACUUM (ANALYZE) outbox_event`
      yield* sql`CHECKPOINT`.pipe(Effect.ignore)
    }),
  )

export const pendingCount = (url: string) =>
  withSql(url, (sql) => sql<{ n: number }>`SELECT count(*)::int AS n FROM outbox_event WHERE status IN ('NEW', 'FAILED')`).pipe(
    Effect.map((rows) => rows[0]?.n ?? 0),
  )
