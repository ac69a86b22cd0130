/**
 * How long migration 7 holds its lock: builds schema 6 in an empty database, fills it with SENT
 * history, pending rows and pending rows beyond a bound, and times `migrate` (ADD CONSTRAINT …
 * NOT VALID takes an exclusive lock held until the migration commits, so the settling UPDATE's
 * time is the lock's). Usage: node bench/migration-7-lock.ts <pending> <history> <bad>, with
 * DATABASE_URL naming an empty database.
 */
import { PgClient } from "@effect/sql-pg"
import { Effect, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import { migrations } from "../src/outbox/migrations/index.ts"
import { migrate } from "../src/outbox/schema-migrator.ts"

const pending = Number(process.argv[2] ?? 100000)
const history = Number(process.argv[3] ?? 1000000)
const bad = Number(process.argv[4] ?? 100)
const program = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  yield* sql`CREATE TABLE outbox_relay_schema (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`
  for (const m of migrations.filter((m) => m.version < 7)) {
    for (const s of m.statements) yield* sql.unsafe(s)
    yield* sql`INSERT INTO outbox_relay_schema (version, name) VALUES (${m.version}, ${m.name})`
  }
  yield* sql.unsafe(`INSERT INTO outbox_event (dedup_key, event_type, aggregate_key, payload, status, sent_at)
    SELECT 'h-' || g, 'search_click', 'k' || (g % 1000), '{"n": 1}', 'SENT', now() FROM generate_series(1, ${history}) g`)
  yield* sql.unsafe(`INSERT INTO outbox_event (dedup_key, event_type, aggregate_key, payload)
    SELECT 'p-' || g, 'search_click', 'k' || (g % 1000), '{"n": 1}' FROM generate_series(1, ${pending}) g`)
  yield* sql.unsafe(`INSERT INTO outbox_event (dedup_key, event_type, aggregate_key, payload, request_id)
    SELECT 'b-' || g, 'search_click', 'k' || (g % 1000), '{"n": 1}', repeat('r', 300) FROM generate_series(1, ${bad}) g`)
  yield* sql`VACUUM ANALYZE outbox_event`
  const t0 = performance.now()
  const report = yield* migrate()
  const ms = performance.now() - t0
  const [dead] = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM outbox_event WHERE dead_reason = 'out_of_limits'`
  console.log(
    `history=${history} pending=${pending} bad=${bad}: migration ${report.applied.join(",")} took ${ms.toFixed(0)} ms; settled ${dead!.n}`,
  )
})
await Effect.runPromise(
  program.pipe(Effect.provide(PgClient.layer({ url: Redacted.make(process.env.DATABASE_URL ?? ""), maxConnections: 1 }))),
)
