/** Runs real relay instances in this process against the test database and broker. */
import { Context, Effect, Layer, Result } from "effect"
import { inject } from "vitest"
import { appLayer } from "../../src/app-layer.ts"
import { parseConfig, RelayConfig, type RelayConfigShape } from "../../src/config/config.ts"
import { DEFAULT_EVENT_TYPES } from "../../src/domain/event-types.ts"
import { ensureTopics } from "../../src/kafka/topics.ts"
import { DatabaseLive } from "../../src/outbox/database.ts"
import { InstanceId } from "../../src/outbox/instance-id.ts"
import { OutboxStore } from "../../src/outbox/outbox-store.ts"
import { runRelay } from "../../src/relay/relay.ts"
import { testTopics } from "./kafka-reader.ts"

export const relayConfig = (databaseUrl: string, env: Record<string, string> = {}): RelayConfigShape => {
  const parsed = parseConfig({
    DATABASE_URL: databaseUrl,
    KAFKA_BROKERS: inject("kafkaBrokers"),
    POLL_INTERVAL_MS: "200",
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? "warn",
    LOG_FORMAT: "pretty",
    ...env,
  })
  if (Result.isFailure(parsed)) throw new Error(JSON.stringify(parsed.failure))
  return parsed.success
}

/** Per-test topics for every default type plus a dead-letter topic, created up front. */
export const withTestTopics = (eventTypes: ReadonlyArray<string> = DEFAULT_EVENT_TYPES) =>
  Effect.gen(function* () {
    const topics = testTopics(eventTypes)
    yield* ensureTopics(inject("kafkaBrokers").split(","), topics.all).pipe(Effect.orDie)
    return { ...topics, env: { TOPIC_MAP: JSON.stringify(topics.map), DLQ_TOPIC: topics.dlq } }
  })

/** A relay instance for the rest of the test's scope (its own pool, producer and instance id). */
export const startRelay = (config: RelayConfigShape) =>
  Effect.forkScoped(runRelay.pipe(Effect.provide(appLayer(Layer.succeed(RelayConfig, config)))))

/** The outbox store on a test database, for appending events the way a service would. */
export const storeLayer = (config: RelayConfigShape) =>
  OutboxStore.layer.pipe(
    Layer.provideMerge(Layer.mergeAll(InstanceId.layer, DatabaseLive)),
    Layer.provide(Layer.succeed(RelayConfig, config)),
  )

/** The store, open for the rest of the test's scope. */
export const openStore = (config: RelayConfigShape) =>
  Effect.map(Layer.build(storeLayer(config)), (context) => Context.get(context, OutboxStore))
