/**
 * `--postgres-levers`: what PostgreSQL's share of an event would be under schema changes,
 * measured before any is made. Each lever is a fresh database with the current schema plus
 * a few statements; the relay's own claim (with its drain cursor) and SENT mark then move a
 * backlog, and the CPU of the backends serving them is read from /proc.
 *
 * The "row locks across the publish" levers measure a different claim protocol instead of
 * the relay's: no lease is written; each batch is a transaction that locks its rows
 * (FOR UPDATE SKIP LOCKED), holds them while the batch would be published, marks them SENT
 * and commits, so an event costs one row version instead of two. Pipelining is emulated
 * with PIPELINE transactions open at once on reserved connections.
 */
import { Context, Effect, Layer, Result } from "effect"
import { SqlClient } from "effect/sql"
import type { Connection } from "effect/sql/SqlConnection"
import { parseConfig, RelayConfig } from "../../src/config/config.ts"
import { DatabaseLive } from "../../src/outbox/database.ts"
import { InstanceId } from "../../src/outbox/instance-id.ts"
import { OutboxStore } from "../../src/outbox/outbox-store.ts"
import { type BenchEnv, withSql } from "../support/bench-env.ts"
import { CpuLedger } from "../support/process-cpu.ts"
import { seedRows } from "../support/seed.ts"
import { BATCH, minimalDrain } from "./ceilings.ts"

export interface Lever {
  readonly name: string
  readonly statements: ReadonlyArray<string>
  /**
   * "lease": the relay's claimDue / markSent (default); "row locks": locks held across the
   * publish, see rowLocksDrain; "minimal": the PostgreSQL minimal reference (no lease, no
   * per-key check: not a protocol to run, the floor any protocol that marks rows stands on).
   */
  readonly protocol?: "lease" | "row locks" | "minimal"
}

// Schema 6 dropped it; this puts it back, to show what it cost.
const EVENT_ID_UNIQUE = "ALTER TABLE outbox_event ADD CONSTRAINT outbox_event_event_id_key UNIQUE (event_id)"
const HOT_MARKS = [
  "DROP INDEX outbox_event_pending_idx",
  "DROP INDEX outbox_event_pending_key_idx",
  "DROP INDEX outbox_event_dead_idx",
  "CREATE INDEX outbox_event_key_idx ON outbox_event (aggregate_key, id) WHERE aggregate_key IS NOT NULL",
]

export const LEVERS: ReadonlyArray<Lever> = [
  { name: "schema as is", statements: [] },
  // Schema 5 and earlier: a unique index on event_id, which nothing looks rows up by.
  { name: "unique index on event_id (schema 5)", statements: [EVENT_ID_UNIQUE] },
  // Unique among pending rows only: a SENT mark's new row version is outside the predicate (no
  // entry), a claim stays HOT; it cannot catch an id reused after its first row was sent.
  {
    name: "unique index on event_id, pending rows only",
    statements: ["CREATE UNIQUE INDEX outbox_event_pending_event_id_idx ON outbox_event (event_id) WHERE status IN ('NEW', 'FAILED')"],
  },
  // No index reads status (or any column a mark writes): every mark can be a HOT update.
  // The per-key check then walks the key's SENT rows too; that is part of the price.
  { name: "HOT marks: no index reads status", statements: HOT_MARKS },
  // One row version per event: no lease write, the row lock of an open transaction is the claim.
  { name: "row locks across the publish", statements: [], protocol: "row locks" },
  { name: "row locks, unique index on event_id", statements: [EVENT_ID_UNIQUE], protocol: "row locks" },
  { name: "row locks, HOT marks (no index reads status)", statements: HOT_MARKS, protocol: "row locks" },
  { name: "PostgreSQL minimal (reference)", statements: [], protocol: "minimal" },
]

export interface LeverResult {
  readonly lever: string
  readonly eventsPerSecond: number
  readonly postgresCpuMicrosPerEvent: number
  readonly hotUpdateShare: number
  /** Claims that returned rows, and how many they returned on average (BATCH at best). */
  readonly claims: number
  readonly meanRowsPerClaim: number
  /** Claims that returned rows but fewer than BATCH (the last one of a drain may, legitimately). */
  readonly shortClaims: number
}

/** Transactions of one instance open at once: claim n+1 while batch n is published and batch n-1 marked. */
export const PIPELINE = 3

/**
 * The claim of the row-locks protocol, run inside a transaction that stays open until the
 * batch is marked: today's candidates (minus the lease condition) locked FOR UPDATE SKIP
 * LOCKED, with every column a record needs read right there (no UPDATE at claim time). The
 * per-key rule is today's, except that "older pending row leased by me" becomes "older row
 * locked by one of my own batches in flight" ($3, their ids), so pipelined batches can take
 * later rows of a key. A candidate that fails the per-key check stays locked until this
 * transaction ends (the lease protocol's statement releases it at once).
 * $1 after (drain cursor), $2 limit, $3 in-flight ids, $4 the largest record carried.
 */
const ROW_LOCK_CLAIM = `
  WITH candidates AS MATERIALIZED (
    SELECT id, event_id, dedup_key, event_type, aggregate_key, request_id, traceparent, attempts, created_at,
           payload::text AS payload_text, headers::text AS headers_text
      FROM outbox_event
     WHERE status IN ('NEW', 'FAILED')
       AND id > $1::bigint
       AND next_attempt_at <= now()
     ORDER BY id
     LIMIT $2
     FOR UPDATE SKIP LOCKED
  ), eligible AS (
    SELECT c.*, octet_length(c.payload_text) + coalesce(octet_length(c.headers_text), 0) AS content_bytes
      FROM candidates c
     WHERE c.aggregate_key IS NULL
        OR NOT EXISTS (
          SELECT 1 FROM outbox_event older
           WHERE older.aggregate_key = c.aggregate_key
             AND older.id < c.id
             AND older.status IN ('NEW', 'FAILED')
             AND older.id NOT IN (SELECT id FROM candidates)
             AND NOT older.id = ANY($3::bigint[]))
  )
  SELECT id::text AS id, event_id::text AS event_id, dedup_key, event_type, aggregate_key,
         CASE WHEN content_bytes <= $4 THEN payload_text END AS payload,
         CASE WHEN content_bytes <= $4 THEN headers_text END AS headers,
         content_bytes, request_id, traceparent, attempts,
         (extract(epoch FROM created_at) * 1000)::float8 AS created_at_ms
    FROM eligible
   ORDER BY id`

/** Today's SENT mark without the `locked_by = me` fence: the row lock is the fence. $1 ids, $2 topics, $3 partitions, $4 offsets. */
const ROW_LOCK_MARK = `
  UPDATE outbox_event o
     SET status = 'SENT', sent_at = now(), locked_by = NULL, locked_until = NULL, last_error = NULL,
         kafka_topic = d.topic, kafka_partition = d.partition, kafka_offset = d.kafka_offset
    FROM (SELECT unnest($1::bigint[]) AS id,
                 unnest($2::text[]) AS topic,
                 unnest($3::int[]) AS partition,
                 unnest($4::bigint[]) AS kafka_offset) d
   WHERE o.id = d.id AND o.status IN ('NEW', 'FAILED')
  RETURNING o.id::text AS id`

interface Drained {
  readonly done: number
  readonly seconds: number
  readonly claimSizes: ReadonlyArray<number>
}

/** The relay's own protocol: claimDue (a lease, with the drain cursor) then markSent, one batch at a time. */
const leaseDrain = (store: OutboxStore["Service"]) =>
  Effect.gen(function* () {
    const claimSizes: Array<number> = []
    const started = performance.now()
    let done = 0
    let after = "0"
    for (;;) {
      const batch = yield* store.claimDue(BATCH, after)
      if (batch.length === 0) break
      claimSizes.push(batch.length)
      yield* store.markSent(batch.map((e, i) => ({ id: e.id, lease: e.lease, topic: "lever", partition: 0, offset: String(done + i) })))
      done += batch.length
      after = batch.at(-1)!.id
    }
    return { done, seconds: (performance.now() - started) / 1000, claimSizes } satisfies Drained
  })

/** The minimal reference; it reports no claim sizes (its batches are always full but the last). */
const minimalLeverDrain = (sql: SqlClient.SqlClient) =>
  Effect.gen(function* () {
    const started = performance.now()
    const done = yield* minimalDrain(sql)
    return { done, seconds: (performance.now() - started) / 1000, claimSizes: [] } satisfies Drained
  })

interface OpenBatch {
  readonly connection: Connection
  readonly ids: ReadonlyArray<string>
  readonly firstOffset: number
}

/**
 * The row-locks protocol, pipelined: batch k is claimed on connection k % PIPELINE while
 * batches k-1 and k-2 are still open, passing their ids as the in-flight set, and batch k-2
 * is marked and committed at the same time (the publish in between is simulated as nothing).
 */
const rowLocksDrain = (connections: ReadonlyArray<Connection>, maxBytes: number) =>
  Effect.gen(function* () {
    const claimSizes: Array<number> = []
    const open: Array<OpenBatch> = []
    const claim = (connection: Connection, after: string, inflight: ReadonlyArray<string>, firstOffset: number) =>
      Effect.gen(function* () {
        yield* connection.execute("BEGIN", [], undefined)
        const rows: ReadonlyArray<{ readonly id: string }> = yield* connection.execute(
          ROW_LOCK_CLAIM,
          [after, BATCH, inflight, maxBytes],
          undefined,
        )
        return { connection, ids: rows.map((r) => r.id), firstOffset } satisfies OpenBatch
      })
    const markAndCommit = (batch: OpenBatch) =>
      Effect.gen(function* () {
        if (batch.ids.length > 0) {
          const marked: ReadonlyArray<unknown> = yield* batch.connection.execute(
            ROW_LOCK_MARK,
            [batch.ids, batch.ids.map(() => "lever"), batch.ids.map(() => 0), batch.ids.map((_, i) => String(batch.firstOffset + i))],
            undefined,
          )
          if (marked.length !== batch.ids.length) return yield* Effect.die(new Error(`marked ${marked.length} of ${batch.ids.length} rows`))
        }
        yield* batch.connection.execute("COMMIT", [], undefined)
      })
    const started = performance.now()
    let done = 0
    let after = "0"
    for (let k = 0; ; k++) {
      // The oldest open batch is marked while the next is claimed; its rows stay in the in-flight set until it commits.
      const oldest = open.length === PIPELINE - 1 ? open.shift() : undefined
      const inflight = [...(oldest?.ids ?? []), ...open.flatMap((b) => b.ids)]
      const [batch] = yield* Effect.all(
        [claim(connections[k % PIPELINE]!, after, inflight, done), oldest === undefined ? Effect.void : markAndCommit(oldest)],
        {
          concurrency: "unbounded",
        },
      )
      if (batch.ids.length === 0) {
        yield* batch.connection.execute("COMMIT", [], undefined)
        break
      }
      claimSizes.push(batch.ids.length)
      open.push(batch)
      done += batch.ids.length
      after = batch.ids.at(-1)!
    }
    for (const batch of open) yield* markAndCommit(batch)
    return { done, seconds: (performance.now() - started) / 1000, claimSizes } satisfies Drained
  })

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
    // The row-locks protocol's connections, reserved (and opened) for the whole run: the pool's others stay free.
    const connections =
      lever.protocol === "row locks"
        ? yield* Effect.forEach(Array.from({ length: PIPELINE }), () =>
            Effect.tap(sql.reserve, (c) => c.execute("SELECT 1", [], undefined)),
          )
        : []
    // Open some of the pool's connections first, so their start-up is not counted.
    yield* Effect.all([observe(false), observe(false), observe(false)], { concurrency: "unbounded" })
    const { done, seconds, claimSizes } =
      lever.protocol === "row locks"
        ? yield* rowLocksDrain(connections, config.maxRecordBytes)
        : lever.protocol === "minimal"
          ? yield* minimalLeverDrain(sql)
          : yield* leaseDrain(store)
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
      claims: claimSizes.length,
      meanRowsPerClaim: claimSizes.length === 0 ? 0 : done / claimSizes.length,
      shortClaims: claimSizes.filter((n) => n < BATCH).length,
    } satisfies LeverResult
  }).pipe(Effect.scoped)
