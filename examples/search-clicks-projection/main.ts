/**
 * The search-clicks projection service: consumes search_click events and keeps
 * search_click_counts (clicks per query) in its own PostgreSQL database, each click
 * counted once however often Kafka delivers it.
 *
 *   DATABASE_URL=postgres://… KAFKA_BROKERS=127.0.0.1:9092 node examples/search-clicks-projection/main.ts
 */
import { NodeRuntime } from "@effect/platform-node"
import { PgClient } from "@effect/sql-pg"
import { Config, Duration, Effect, Layer, Schedule } from "effect"
import { ensureInboxTable, IdempotentConsumer } from "../../src/consumer.ts"
import { applySearchClick, ensureProjectionTable, SearchClick } from "./projection.ts"

const settings = Config.all({
  brokers: Config.String("KAFKA_BROKERS").pipe(Config.map((s) => s.split(",").map((b) => b.trim()))),
  topic: Config.String("CLICK_TOPIC").pipe(Config.withDefault("search.click")),
  groupId: Config.String("GROUP_ID").pipe(Config.withDefault("search-clicks-projection")),
  deadLetterTopic: Config.String("DEAD_LETTER_TOPIC").pipe(Config.withDefault("search-clicks-projection.dlq")),
  inboxRetention: Config.Duration("INBOX_RETENTION").pipe(Config.withDefault(Duration.days(7))),
  fromBeginning: Config.Boolean("FROM_BEGINNING").pipe(Config.withDefault(true)),
})

/** The projection's own database: the inbox table lives here, next to the counts it protects. */
const Database = PgClient.layerConfig({
  url: Config.Redacted("DATABASE_URL"),
  applicationName: Config.succeed("search-clicks-projection"),
})

const Tables = Layer.effectDiscard(
  Effect.gen(function* () {
    yield* ensureInboxTable
    yield* ensureProjectionTable
  }),
)

const Consumer = Layer.unwrap(
  Effect.gen(function* () {
    const s = yield* settings
    return IdempotentConsumer.layer({
      groupId: s.groupId,
      topics: [s.topic],
      kafka: { clientId: s.groupId, brokers: s.brokers },
      payload: SearchClick,
      handler: applySearchClick,
      deadLetterTopic: s.deadLetterTopic,
      inboxRetention: s.inboxRetention,
      fromBeginning: s.fromBeginning,
    })
  }),
)

/**
 * Runs until SIGTERM (the consumer finishes the message in flight and commits), or fails
 * (exit code 1, for the orchestrator to restart it) if kafkajs gives up for good.
 */
const program = Effect.gen(function* () {
  const consumer = yield* IdempotentConsumer
  // A status line every 30 s; the same counts are Effect metrics (outbox_consumer_*_total).
  yield* consumer.stats.pipe(
    Effect.flatMap((stats) => Effect.logInfo("search-clicks projection").pipe(Effect.annotateLogs({ ...stats }))),
    Effect.repeat(Schedule.spaced("30 seconds")),
    Effect.forkChild,
  )
  return yield* consumer.awaitCrash
})

const Main = Consumer.pipe(Layer.provide(Tables), Layer.provide(Database))

NodeRuntime.runMain(program.pipe(Effect.provide(Main)))
