/**
 * The relay's own ceilings, measured on the same machine in the same run with the same
 * messages: Kafka alone (the relay's producer settings, identical records, no database)
 * and PostgreSQL alone (the relay's claim + mark statements, no Kafka).
 */
import { randomUUID } from "node:crypto"
import { Context, Effect, Layer, Result } from "effect"
import { parseConfig, RelayConfig } from "../../src/config/config.ts"
import { Kafka, Partitioners } from "../../src/kafka/kafkajs.ts"
import { DatabaseLive } from "../../src/outbox/database.ts"
import { InstanceId } from "../../src/outbox/instance-id.ts"
import { OutboxStore } from "../../src/outbox/outbox-store.ts"
import type { BenchEnv } from "../support/bench-env.ts"
import { PAYLOAD, seedRows } from "../support/seed.ts"

export const BATCH = 500

/** Events/s producing `count` relay-shaped records in batches of BATCH, one send in flight. */
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
    await producer.disconnect()
    return count / seconds
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
      yield* store.markSent(batch.map((e, i) => ({ id: e.id, topic: "ceiling", partition: 0, offset: String(done + i) })))
      done += batch.length
    }
    return done / ((performance.now() - started) / 1000)
  }).pipe(Effect.scoped)
