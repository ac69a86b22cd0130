/**
 * Idempotent consumers in this process against the test broker, each on its own scope so
 * a test can stop one mid-stream (no offset commit after that) and start another in the
 * same group; plus the Kafka tools those tests need: re-publishing messages as they were,
 * and replaying a dead-letter topic.
 */
import { randomUUID } from "node:crypto"
import { Effect, Exit, Layer, Logger, References, Result, Scope } from "effect"
import { SqlClient } from "effect/sql"
import { inject } from "vitest"
import { applySearchClick, ensureProjectionTable, SearchClick } from "../../examples/search-clicks-projection/projection.ts"
import {
  type ConsumedEvent,
  ensureInboxTable,
  type IdempotentConsumerHandle,
  type IdempotentConsumerOptions,
  makeIdempotentConsumer,
} from "../../src/consumer.ts"
import { Kafka } from "../../src/kafka/kafkajs.ts"
import { buildRecord, type OutboundRecord } from "../../src/kafka/records.ts"
import { ensureTopics } from "../../src/kafka/topics.ts"
import type { ReadMessage } from "./kafka-reader.ts"
import { sqlLayer, testDatabase } from "./test-database.ts"

export const brokers = () => inject("kafkaBrokers").split(",")

/** A fresh database for a consumer service: the inbox and the projection, no outbox (it may live elsewhere). */
export const projectionDatabase = Effect.gen(function* () {
  const db = yield* testDatabase({ migrated: false })
  yield* Effect.gen(function* () {
    yield* ensureInboxTable
    yield* ensureProjectionTable
  }).pipe(Effect.provide(sqlLayer(db.url)), Effect.orDie)
  return db
})

export interface RunningConsumer {
  readonly handle: IdempotentConsumerHandle
  /** Stops it as a SIGTERM would: the message in flight gets `shutdownGrace`, then is abandoned uncommitted. */
  readonly stop: Effect.Effect<void>
}

/** Starts a consumer with its own pool on `url`; it runs until `stop` or the end of the test's scope. */
export const startConsumer = <A, E>(url: string, options: Omit<IdempotentConsumerOptions<A, E, SqlClient.SqlClient>, "kafka">) =>
  Effect.gen(function* () {
    const scope = yield* Scope.make()
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    const sql = yield* Layer.buildWithScope(sqlLayer(url), scope)
    const handle = yield* makeIdempotentConsumer({
      cleanupInterval: "1 hour",
      consumerConfig: { sessionTimeout: 10_000, heartbeatInterval: 500, maxWaitTimeInMs: 200 },
      ...options,
      kafka: { clientId: `test-consumer-${options.groupId}`, brokers: brokers(), logLevel: 1 },
    }).pipe(Effect.provideContext(sql), Scope.provide(scope), Effect.orDie)
    return { handle, stop: Scope.close(scope, Exit.void) } satisfies RunningConsumer
  })

/** The example's projection consumer, fast retries for tests. */
export const startProjection = (
  url: string,
  options: { readonly groupId: string; readonly topic: string; readonly deadLetterTopic: string } & Partial<
    Omit<IdempotentConsumerOptions<SearchClick, unknown, SqlClient.SqlClient>, "kafka" | "payload" | "groupId" | "topics">
  >,
) =>
  startConsumer<SearchClick, unknown>(url, {
    topics: [options.topic],
    payload: SearchClick,
    handler: applySearchClick,
    fromBeginning: true,
    maxRetries: 2,
    retryBackoff: { baseMs: 20, maxMs: 100 },
    ...options,
  })

/** A handler wrapper that fails while `shouldFail` says so (a bug fixed later, a dependency down). */
export const failingWhile =
  <A>(
    shouldFail: (event: ConsumedEvent<A>) => boolean,
    handler: (event: ConsumedEvent<A>) => Effect.Effect<void, unknown, SqlClient.SqlClient>,
  ) =>
  (event: ConsumedEvent<A>) =>
    shouldFail(event) ? Effect.fail(new Error(`handler cannot apply ${event.dedupKey} yet`)) : handler(event)

/** The projection as a map query → clicks. */
export const readClickCounts = (url: string) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const rows = yield* sql<{ query: string; clicks: string }>`SELECT query, clicks::text AS clicks FROM search_click_counts ORDER BY query`
    return Object.fromEntries(rows.map((r) => [r.query, Number(r.clicks)]))
  }).pipe(Effect.provide(sqlLayer(url)), Effect.orDie)

export const inboxKeys = (url: string, consumerGroup: string) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const rows = yield* sql<{
      dedup_key: string
    }>`SELECT dedup_key FROM consumer_inbox WHERE consumer_group = ${consumerGroup} ORDER BY dedup_key`
    return rows.map((r) => r.dedup_key)
  }).pipe(Effect.provide(sqlLayer(url)), Effect.orDie)

/** Polls until `done` holds for the consumer's stats (or fails after `timeoutMs`). */
export const waitForStats = (
  consumer: RunningConsumer,
  done: (s: Effect.Success<IdempotentConsumerHandle["stats"]>) => boolean,
  timeoutMs = 60_000,
) =>
  Effect.gen(function* () {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const stats = yield* consumer.handle.stats
      if (done(stats)) return stats
      if (Date.now() > deadline)
        return yield* Effect.die(new Error(`consumer stats never reached the expected state: ${JSON.stringify(stats)}`))
      yield* Effect.sleep("100 millis")
    }
  })

/** Produces messages again exactly as they were read (key, value, headers), as a producer retry or a replay would. */
export const republish = (messages: ReadonlyArray<Pick<ReadMessage, "topic" | "key" | "value" | "headers">>) =>
  Effect.promise(async () => {
    const producer = new Kafka({ clientId: "test-republisher", brokers: brokers(), logLevel: 1 }).producer()
    await producer.connect()
    try {
      for (const m of messages) {
        await producer.send({ topic: m.topic, acks: -1, messages: [{ key: m.key, value: m.value, headers: { ...m.headers } }] })
      }
    } finally {
      await producer.disconnect()
    }
  })

/** Sends dead letters back to the topic they came from, without their dlq.* headers (what a replay tool does). */
export const replayDeadLetters = (letters: ReadonlyArray<ReadMessage>) =>
  republish(
    letters.map((m) => ({
      topic: m.headers["dlq.original_topic"]!,
      key: m.key,
      value: m.value,
      headers: Object.fromEntries(Object.entries(m.headers).filter(([name]) => !name.startsWith("dlq."))),
    })),
  )

export const createTopics = (topics: ReadonlyArray<string>) => ensureTopics(brokers(), topics).pipe(Effect.orDie)

export interface TestClick {
  readonly dedupKey: string
  readonly query: string
  readonly aggregateKey?: string | null
  readonly traceparent?: string
}

/** search_click events as the relay would put them on `topic` (same record builder, so same key and headers). */
export const publishClicks = (topic: string, clicks: ReadonlyArray<TestClick>) =>
  Effect.gen(function* () {
    const records: Array<OutboundRecord> = clicks.map((c, i) => {
      const built = buildRecord(
        {
          id: String(i + 1),
          eventId: randomUUID(),
          dedupKey: c.dedupKey,
          eventType: "search_click",
          aggregateKey: c.aggregateKey === undefined ? c.query : c.aggregateKey,
          payload: JSON.stringify({ query: c.query, resultId: `r-${i}`, position: i % 10 }),
          headers: "{}",
          oversize: null,
          requestId: `req-${c.dedupKey}`,
          traceparent: c.traceparent ?? null,
          attempts: 0,
          waitingDeadLetter: null,
          createdAtMs: Date.now(),
          takenOverFrom: null,
          lease: "",
        },
        { search_click: topic },
      )
      if (Result.isFailure(built)) throw new Error(built.failure.message)
      return built.success
    })
    yield* Effect.promise(async () => {
      const producer = new Kafka({ clientId: "test-click-publisher", brokers: brokers(), logLevel: 1 }).producer()
      await producer.connect()
      try {
        await producer.send({ topic, acks: -1, messages: records.map((r) => ({ key: r.key, value: r.value, headers: { ...r.headers } })) })
      } finally {
        await producer.disconnect()
      }
    })
    return records
  })

/** Expected projection for clicks: one count per click, by normalized query. */
export const expectedCounts = (queries: ReadonlyArray<string>) => {
  const counts: Record<string, number> = {}
  for (const q of queries) counts[q] = (counts[q] ?? 0) + 1
  return Object.fromEntries(Object.entries(counts).sort(([a], [b]) => a.localeCompare(b)))
}

/** The group's committed offset per partition of `topic`, as numbers. */
export const committedOffsets = (groupId: string, topic: string) =>
  Effect.promise(async () => {
    const admin = new Kafka({ clientId: "test-offsets", brokers: brokers(), logLevel: 1 }).admin()
    await admin.connect()
    try {
      const [t] = await admin.fetchOffsets({ groupId, topics: [topic] })
      const ends = await admin.fetchTopicOffsets(topic)
      return {
        committed: Object.fromEntries((t?.partitions ?? []).map((p) => [p.partition, Number(p.offset)])),
        end: Object.fromEntries(ends.map((p) => [p.partition, Number(p.high)])),
      }
    } finally {
      await admin.disconnect()
    }
  })

/** A message exactly as bytes: headers as Buffers, so a test can send what no string encodes. */
export interface RawMessage {
  /** Without it, the key picks the partition. */
  readonly partition?: number
  readonly key: string
  readonly value: string | Buffer
  readonly headers: Readonly<Record<string, Buffer | string>>
}

/** Produces raw messages in order (one key → one partition). */
export const publishRaw = (topic: string, messages: ReadonlyArray<RawMessage>) =>
  Effect.promise(async () => {
    const producer = new Kafka({ clientId: "test-raw-publisher", brokers: brokers(), logLevel: 1 }).producer()
    await producer.connect()
    try {
      await producer.send({
        topic,
        acks: -1,
        messages: messages.map((m) => ({
          ...(m.partition === undefined ? {} : { partition: m.partition }),
          key: m.key,
          value: m.value,
          headers: { ...m.headers },
        })),
      })
    } finally {
      await producer.disconnect()
    }
  })

export interface RawReadMessage {
  readonly partition: number
  readonly offset: string
  readonly headers: Readonly<Record<string, Buffer>>
}

/** Reads `expected` messages of `topic` from the beginning, headers as the bytes Kafka holds. */
export const readRaw = (topic: string, expected: number, timeoutMs = 30_000) =>
  Effect.promise(async () => {
    const consumer = new Kafka({ clientId: "test-raw-reader", brokers: brokers(), logLevel: 1 }).consumer({
      groupId: `test-raw-reader-${randomUUID()}`,
      maxWaitTimeInMs: 200,
    })
    const messages: Array<RawReadMessage> = []
    await consumer.connect()
    try {
      await consumer.subscribe({ topics: [topic], fromBeginning: true })
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`read ${messages.length} of ${expected} messages from ${topic}`)), timeoutMs)
        void consumer.run({
          eachMessage: async ({ partition, message }) => {
            const headers: Record<string, Buffer> = {}
            for (const [name, value] of Object.entries(message.headers ?? {})) {
              if (Buffer.isBuffer(value)) headers[name] = value
              else if (typeof value === "string") headers[name] = Buffer.from(value)
            }
            messages.push({ partition, offset: message.offset, headers })
            if (messages.length >= expected) {
              clearTimeout(timer)
              resolve()
            }
          },
        })
      })
    } finally {
      await consumer.disconnect()
    }
    return messages
  })

/** Polls `check` until it returns a value (or fails after `timeoutMs`): waits for an outcome, never for a fixed time. */
export const waitUntil = <A>(what: string, check: Effect.Effect<A | undefined>, timeoutMs = 30_000) =>
  Effect.gen(function* () {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const value = yield* check
      if (value !== undefined) return value
      if (Date.now() > deadline) return yield* Effect.die(new Error(`timed out waiting for ${what}`))
      yield* Effect.sleep("100 millis")
    }
  })

/** Sets a group's committed offsets while it has no members (what an earlier run would have left). */
export const setCommittedOffsets = (groupId: string, topic: string, partitions: ReadonlyArray<{ partition: number; offset: string }>) =>
  Effect.promise(async () => {
    const admin = new Kafka({ clientId: "test-offsets", brokers: brokers(), logLevel: 1 }).admin()
    await admin.connect()
    try {
      await admin.setOffsets({ groupId, topic, partitions: [...partitions] })
    } finally {
      await admin.disconnect()
    }
  })

/** Every log line's text, to check what the consumer reported (e.g. no kafkajs restart). */
export const makeLogCapture = () => {
  const lines: Array<string> = []
  const logger = Logger.make((options: Logger.Options<unknown>) => {
    const parts = Array.isArray(options.message) ? options.message : [options.message]
    const annotations = options.fiber.getRef(References.CurrentLogAnnotations)
    lines.push(
      `${options.logLevel} ${parts.map((p) => (typeof p === "string" ? p : JSON.stringify(p))).join(" ")} ${JSON.stringify(annotations)}`,
    )
  })
  return { lines, layer: Logger.layer([logger, Logger.defaultLogger]) }
}
