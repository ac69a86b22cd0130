/**
 * One member of a consumer group, as its own process, for the kill/rebalance run
 * (consumer-soak.ts): the search-clicks projection plus an append-only log of
 * applications, both written in the inbox transaction (and a log of skipped deliveries). The log is the ground truth: a
 * click applied twice shows up as two rows, a lost click as none.
 *
 *   DATABASE_URL=… KAFKA_BROKERS=… TOPIC=… GROUP_ID=… WORKER=… node test/support/consumer-worker.ts
 */
import { NodeRuntime } from "@effect/platform-node"
import { PgClient } from "@effect/sql-pg"
import { Config, Effect, Layer, Logger, References } from "effect"
import { SqlClient } from "effect/sql"
import { applySearchClick, SearchClick } from "../../examples/search-clicks-projection/projection.ts"
import { type ConsumedEvent, IdempotentConsumer } from "../../src/consumer.ts"

const settings = Config.all({
  brokers: Config.String("KAFKA_BROKERS").pipe(Config.map((s) => s.split(",").map((b) => b.trim()))),
  topic: Config.String("TOPIC"),
  groupId: Config.String("GROUP_ID"),
  worker: Config.String("WORKER"),
})

const Database = PgClient.layerConfig({ url: Config.Redacted("DATABASE_URL"), maxConnections: Config.succeed(4) })

const Consumer = Layer.unwrap(
  Effect.gen(function* () {
    const s = yield* settings
    const sql = yield* SqlClient.SqlClient
    return IdempotentConsumer.layer({
      groupId: s.groupId,
      topics: [s.topic],
      kafka: { clientId: `soak-${s.worker}`, brokers: s.brokers },
      payload: SearchClick,
      handler: (event: ConsumedEvent<SearchClick>) =>
        Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          yield* applySearchClick(event)
          yield* sql`INSERT INTO applied_log (dedup_key, worker, kafka_partition, kafka_offset) VALUES (${event.dedupKey}, ${s.worker}, ${event.partition}, ${event.offset}::bigint)`
        }),
      // Skips are logged after their transaction (best effort: a SIGKILL can lose the last few).
      afterMessage: (outcome) =>
        outcome._tag === "Duplicate"
          ? sql`INSERT INTO skipped_log (dedup_key, worker) VALUES (${outcome.dedupKey}, ${s.worker})`.pipe(
              Effect.asVoid,
              Effect.catch((error) => Effect.logWarning("could not log a skip").pipe(Effect.annotateLogs({ error: error.message }))),
            )
          : Effect.void,
      deadLetterTopic: `${s.topic}.dlq`,
      fromBeginning: true,
      retryBackoff: { baseMs: 50, maxMs: 500 },
      outageBackoff: { baseMs: 100, maxMs: 1000 },
      consumerConfig: { sessionTimeout: 6000, heartbeatInterval: 500, rebalanceTimeout: 10_000 },
    })
  }),
)

const program = Effect.gen(function* () {
  const consumer = yield* IdempotentConsumer
  return yield* consumer.awaitCrash
})

NodeRuntime.runMain(
  program.pipe(
    Effect.provide(Consumer.pipe(Layer.provide(Database))),
    Effect.provide(Logger.layer([Logger.consoleLogFmt])),
    Effect.provideService(References.MinimumLogLevel, "Info"),
  ),
)
