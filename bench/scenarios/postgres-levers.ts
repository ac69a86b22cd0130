/**
 * `--postgres-levers`: what PostgreSQL's share of an event would be under schema changes,
 * measured before any is made. Each lever is a fresh database with the current schema plus
 * a few statements; the relay's own claim (with its drain cursor) and SENT mark then move a
 * backlog, and the CPU of the backends serving them is read from /proc.
 */
import { Context, Effect, Layer, Result } from "effect"
import { SqlClient } from "effect/sql"
import { parseConfig, RelayConfig } from "../../src/config/config.ts"
import { DatabaseLive } from "../../src/outbox/database.ts"
import { InstanceId } from "../../src/outbox/instance-id.ts"
import { OutboxStore } from "../../src/outbox/outbox-store.ts"
import { type BenchEnv, withSql } from "../support/bench-env.ts"
import { CpuLedger } from "../support/process-cpu.ts"
import { seedRows } from "../support/seed.ts"
import { BATCH } from "./ceilings.ts"

export interface Lever {
  readonly name: string
  readonly statements: ReadonlyArray<string>
}

export const LEVERS: ReadonlyArray<Lever> = [
  { name: "schema as is", statements: [] },
  // Nothing in the relay looks rows up by event_id; it is generated, never given by writers.
  { name: "no unique index on event_id", statements: ["ALTER TABLE outbox_event DROP CONSTRAINT outbox_event_event_id_key"] },
  // No index reads status (or any column a mark writes): every mark can be a HOT update.
  // The per-key check then walks the key's SENT rows too; that is part of the price.
  {
    name: "HOT marks: no index reads status",
    statements: [
      "ALTER TABLE outbox_event DROP CONSTRAINT outbox_event_event_id_key",
      "DROP INDEX outbox_event_pending_idx",
      "DROP INDEX outbox_event_pending_key_idx",
      "DROP INDEX outbox_event_dead_idx",
      "CREATE INDEX outbox_event_key_idx ON outbox_event (aggregate_key, id) WHERE aggregate_key IS NOT NULL",
    ],
  },
]

export interface LeverResult {
  readonly lever: string
  readonly eventsPerSecond: number
  readonly postgresCpuMicrosPerEvent: number
  readonly hotUpdateShare: number
}

export const postgresLever = (env: BenchEnv, count: number, lever: Lever) =>
  Effect.gen(function* () {
    yield* withSql(env.databaseUrl, (sql) => Effect.forEach(lever.statements, (s) => sql.unsafe(s), { discard: true }))
    yield* seedRows(env.databaseUrl, { count, status: "NEW", keys: 1000, prefix: "lever" })
    const config = Result.getOrThrow(parseConfig({ DATABASE_URL: env.databaseUrl, KAFKA_BROKERS: env.brokers, LOG_LEVEL: "warn" }))
    const context = yield* Layer.build(
      OutboxStore.layer.pipe(
        Layer.provideMerge(Layer.mergeAll(DatabaseLive, InstanceId.layer)),
        Layer.provide(Layer.succeed(RelayConfig, config)),
      ),
    )
    const store = Context.get(context, OutboxStore)
    const sql = Context.get(context, SqlClient.SqlClient)
    const backends = new CpuLedger()
    // At the start only what the backends use from now on counts; a backend first seen at the end, all it used.
    const observe = (fromZero: boolean) =>
      Effect.map(
        sql<{ pid: number }>`SELECT pid FROM pg_stat_activity WHERE application_name = 'outbox-relay' AND datname = current_database()`,
        (rows) => {
          for (const { pid } of rows) backends.observe(pid, fromZero)
        },
      )
    // Open some of the pool's connections first, so their start-up is not counted.
    yield* Effect.all([observe(false), observe(false), observe(false)], { concurrency: "unbounded" })
    const started = performance.now()
    let done = 0
    let after = "0"
    for (;;) {
      const batch = yield* store.claimDue(BATCH, after)
      if (batch.length === 0) break
      yield* store.markSent(batch.map((e, i) => ({ id: e.id, lease: e.lease, topic: "lever", partition: 0, offset: String(done + i) })))
      done += batch.length
      after = batch.at(-1)!.id
    }
    const seconds = (performance.now() - started) / 1000
    yield* observe(true)
    // A backend reports its table statistics when idle for 10 s at the latest.
    yield* Effect.sleep("11 seconds")
    const [stats] = yield* sql<{ upd: number; hot: number }>`
      SELECT n_tup_upd::int AS upd, n_tup_hot_upd::int AS hot FROM pg_stat_user_tables WHERE relname = 'outbox_event'`
    return {
      lever: lever.name,
      eventsPerSecond: done / seconds,
      postgresCpuMicrosPerEvent: (backends.seconds / done) * 1e6,
      hotUpdateShare: stats === undefined || stats.upd === 0 ? 0 : stats.hot / stats.upd,
    } satisfies LeverResult
  }).pipe(Effect.scoped)
