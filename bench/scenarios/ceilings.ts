/**
 * The relay's own ceilings, measured on the same machine in the same run with the same
 * messages: Kafka alone (the relay's producer settings, identical records, no database)
 * and PostgreSQL alone (the relay's claim + mark statements, no Kafka).
 */
import { randomUUID } from "node:crypto"
import { Context, Effect, Layer, Redacted, Result } from "effect"
import { SqlClient } from "effect/sql"
import { parseConfig, RelayConfig } from "../../src/config/config.ts"
import { Kafka, Partitioners } from "../../src/kafka/kafkajs.ts"
import { DatabaseLive, pgClientLayer } from "../../src/outbox/database.ts"
import { InstanceId } from "../../src/outbox/instance-id.ts"
import { OutboxStore } from "../../src/outbox/outbox-store.ts"
import type { BenchEnv } from "../support/bench-env.ts"
import { PAYLOAD, seedRows } from "../support/seed.ts"

export const BATCH = 500

/** Events/s producing `count` relay-shaped records in batches of BATCH, one send in flight, and kafkajs' CPU per record. */
export const kafkaCeiling = (env: BenchEnv, count: number) =>
  Effect.promise(async () => {
    const kafka = new Kafka({ clientId: "outbox-relay-bench", brokers: env.brokers.split(","), logLevel: 1 })
    const producer = kafka.producer({
      idempotent: true,
      maxInFlightRequests: 1,
      retry: { retries: 2 },
      createPartitioner: Partitioners.DefaultPartitioner,
    })
    await producer.connect()
    const topic = env.topicMap.search_click!
    const value = JSON.stringify(PAYLOAD)
    const started = performance.now()
    // This process does nothing else meanwhile: its CPU is kafkajs' own cost per message, the
    // floor of the relay's share.
    const cpuBefore = process.cpuUsage()
    for (let sent = 0; sent < count; sent += BATCH) {
      const messages = Array.from({ length: Math.min(BATCH, count - sent) }, (_, i) => {
        const g = sent + i
        return {
          key: `key-${g % 1000}`,
          value,
          headers: {
            event_id: randomUUID(),
            dedup_key: `ceiling-${g}`,
            event_type: "search_click",
            request_id: `req-${g}`,
            traceparent: `00-${(g + 1).toString(16).padStart(32, "0")}-${(g + 1).toString(16).padStart(16, "0")}-01`,
          },
        }
      })
      await producer.sendBatch({ acks: -1, topicMessages: [{ topic, messages }] })
    }
    const seconds = (performance.now() - started) / 1000
    const cpu = process.cpuUsage(cpuBefore)
    await producer.disconnect()
    return { eventsPerSecond: count / seconds, cpuMicrosPerEvent: (cpu.user + cpu.system) / count }
  })

/** Events/s claiming and marking `count` rows with the relay's own store, nothing published. */
export const postgresCeiling = (env: BenchEnv, count: number) =>
  Effect.gen(function* () {
    yield* seedRows(env.databaseUrl, { count, status: "NEW", keys: 1000, prefix: "pg-ceiling" })
    const config = Result.getOrThrow(parseConfig({ DATABASE_URL: env.databaseUrl, KAFKA_BROKERS: env.brokers, LOG_LEVEL: "warn" }))
    const store = yield* Effect.map(
      Layer.build(
        OutboxStore.layer.pipe(
          Layer.provide(Layer.mergeAll(DatabaseLive, InstanceId.layer)),
          Layer.provide(Layer.succeed(RelayConfig, config)),
        ),
      ),
      (ctx) => Context.get(ctx, OutboxStore),
    )
    const started = performance.now()
    let done = 0
    for (;;) {
      const batch = yield* store.claimDue(BATCH)
      if (batch.length === 0) break
      yield* store.markSent(batch.map((e, i) => ({ id: e.id, lease: e.lease, topic: "ceiling", partition: 0, offset: String(done + i) })))
      done += batch.length
    }
    return done / ((performance.now() - started) / 1000)
  }).pipe(Effect.scoped)

/**
 * "PostgreSQL minimal": the cheapest claim + mark that still leaves every row SENT with its
 * sent_at and offset. One short transaction per batch: lock the next rows (SKIP LOCKED, so
 * instances could share the table), read what a record needs, mark them SENT, commit. No
 * lease is written and no per-key check made, so each row gets one new version instead of
 * two: this is what the protocol itself costs above the bare minimum, not a protocol to run
 * (its locks would have to be held across the publish, and nothing keeps a key in order).
 */
export const postgresMinimalCeiling = (env: BenchEnv, count: number) =>
  Effect.gen(function* () {
    yield* seedRows(env.databaseUrl, { count, status: "NEW", keys: 1000, prefix: "pg-minimal" })
    const sql = yield* SqlClient.SqlClient
    const started = performance.now()
    const done = yield* minimalDrain(sql)
    return done / ((performance.now() - started) / 1000)
  }).pipe(
    // The relay's own connection settings: the comparison is of statements, not of commit durability.
    Effect.provide(pgClientLayer(Redacted.make(env.databaseUrl), 1, { synchronous_commit: "off", jit: "off" })),
  )

/** The minimal claim + mark over the whole backlog, a transaction per batch; returns how many rows it marked. */
export const minimalDrain = (sql: SqlClient.SqlClient) =>
  Effect.gen(function* () {
    let done = 0
    // A cursor past the last batch, as the relay's drain has: without one every claim walks
    // the index entries of the rows marked before it (until vacuum removes them).
    let after = "0"
    for (;;) {
      const n = yield* sql.withTransaction(
        Effect.gen(function* () {
          const rows = yield* sql<{ id: string }>`
            SELECT id::text AS id, event_id::text, dedup_key, event_type, aggregate_key, payload::text, headers::text,
                   request_id, traceparent, attempts
              FROM outbox_event o
             WHERE status IN ('NEW', 'FAILED') AND o.id > ${after}::bigint AND next_attempt_at <= now()
             ORDER BY o.id LIMIT ${BATCH}
             FOR UPDATE SKIP LOCKED`
          if (rows.length === 0) return 0
          yield* sql`
            UPDATE outbox_event o
               SET status = 'SENT', sent_at = now(), kafka_topic = 'ceiling', kafka_partition = 0, kafka_offset = d.kafka_offset
              FROM (SELECT unnest(${rows.map((r) => r.id)}::bigint[]) AS id,
                           unnest(${rows.map((_, i) => String(done + i))}::bigint[]) AS kafka_offset) d
             WHERE o.id = d.id`
          after = rows.at(-1)!.id
          return rows.length
        }),
      )
      if (n === 0) return done
      done += n
    }
  })
