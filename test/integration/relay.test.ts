/**
 * The relay against the real PostgreSQL and Kafka: every event is read back from Kafka
 * by a consumer and from the table by SQL, and the two must agree exactly.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import { inject } from "vitest"
import { DEFAULT_EVENT_TYPES } from "../../src/domain/event-types.ts"
import type { NewEvent } from "../../src/domain/outbox-event.ts"
import { ensureTopics } from "../../src/kafka/topics.ts"
import { type ReadMessage, readTopics } from "../support/kafka-reader.ts"
import { openStore, relayConfig, startRelay, withTestTopics } from "../support/relay-harness.ts"
import { sqlLayer, testDatabase } from "../support/test-database.ts"

const events = (n: number, prefix: string, keys = 50): ReadonlyArray<NewEvent> =>
  Array.from({ length: n }, (_, i) => ({
    dedupKey: `${prefix}-${i}`,
    eventType: DEFAULT_EVENT_TYPES[i % DEFAULT_EVENT_TYPES.length]!,
    aggregateKey: i % 5 === 0 ? null : `key-${i % keys}`,
    payload: { seq: i, body: `event ${i}` },
    headers: { tenant: "acme" },
    requestId: `req-${i}`,
    traceparent: `00-${(i + 1).toString(16).padStart(32, "0")}-${(i + 1).toString(16).padStart(16, "0")}-01`,
  }))

interface Row {
  readonly event_id: string
  readonly dedup_key: string
  readonly status: string
  readonly sent_at: Date | null
  readonly kafka_topic: string | null
  readonly kafka_partition: number | null
  readonly kafka_offset: string | null
}

const waitUntilSettled = (url: string, total: number) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    for (let i = 0; i < 600; i++) {
      const [row] = yield* sql<{ pending: number; all: number }>`
        SELECT count(*) FILTER (WHERE status IN ('NEW', 'FAILED'))::int AS pending, count(*)::int AS all FROM outbox_event`
      if (row!.pending === 0 && row!.all === total) return
      yield* Effect.sleep("100 millis")
    }
    throw new Error("events were not all relayed within 60 s")
  }).pipe(Effect.provide(sqlLayer(url)))

const readRows = (url: string) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    return yield* sql<Row>`
      SELECT event_id::text, dedup_key, status, sent_at, kafka_topic, kafka_partition, kafka_offset::text FROM outbox_event ORDER BY id`
  }).pipe(Effect.provide(sqlLayer(url)), Effect.orDie)

/** For each aggregate key, the sequence numbers as Kafka holds them (partition order). */
const sequencesByKey = (messages: ReadonlyArray<ReadMessage>) => {
  const byKey = new Map<string, Array<number>>()
  const ordered = [...messages].sort(
    (a, b) => a.topic.localeCompare(b.topic) || a.partition - b.partition || Number(a.offset) - Number(b.offset),
  )
  for (const m of ordered) {
    if (!m.key?.startsWith("key-")) continue
    const seqs = byKey.get(`${m.topic}/${m.key}`) ?? []
    seqs.push((JSON.parse(m.value!) as { seq: number }).seq)
    byKey.set(`${m.topic}/${m.key}`, seqs)
  }
  return byKey
}

describe("relay", () => {
  it.live(
    "relays 1 000 events of every default type to their topics with key and headers, and marks each SENT",
    () =>
      Effect.gen(function* () {
        const db = yield* testDatabase()
        const topics = yield* withTestTopics()
        const config = relayConfig(db.url, topics.env)
        const written = events(1000, "e2e")
        yield* (yield* openStore(config)).append(written)
        yield* startRelay(config)
        yield* waitUntilSettled(db.url, written.length)

        const rows = yield* readRows(db.url)
        const messages = yield* readTopics(Object.values(topics.map), { expected: written.length })
        expect(rows.filter((r) => r.status === "SENT")).toHaveLength(1000)
        expect(rows.every((r) => r.sent_at !== null)).toBe(true)
        expect(messages).toHaveLength(1000)

        const byEventId = new Map(messages.map((m) => [m.headers.event_id, m]))
        expect(byEventId.size).toBe(1000)
        for (const [i, row] of rows.entries()) {
          const e = written[i]!
          const m = byEventId.get(row.event_id)!
          expect(m.topic).toBe(topics.map[e.eventType])
          expect(m.key).toBe(e.aggregateKey ?? e.dedupKey)
          expect(JSON.parse(m.value!)).toEqual(e.payload)
          expect(m.headers).toEqual({
            tenant: "acme",
            event_id: row.event_id,
            dedup_key: e.dedupKey,
            event_type: e.eventType,
            request_id: e.requestId,
            traceparent: e.traceparent,
          })
          // Where the table says the event went is where the consumer found it.
          expect([row.kafka_topic, row.kafka_partition, row.kafka_offset]).toEqual([m.topic, m.partition, m.offset])
        }
        for (const seqs of sequencesByKey(messages).values()) expect(seqs).toEqual([...seqs].sort((a, b) => a - b))
      }),
    180_000,
  )

  it.live(
    "treats a second insert with an existing dedup_key as a no-op, and Kafka gets that event once",
    () =>
      Effect.gen(function* () {
        const db = yield* testDatabase()
        const topics = yield* withTestTopics()
        const config = relayConfig(db.url, topics.env)
        const store = yield* openStore(config)
        const first = yield* store.append([{ dedupKey: "order-42-paid", eventType: "search_click", payload: { v: 1 } }])
        const again = yield* store.append([
          { dedupKey: "order-42-paid", eventType: "search_click", payload: { v: 2 } },
          { dedupKey: "order-43-paid", eventType: "search_click", payload: { v: 3 } },
        ])
        expect(first.inserted).toHaveLength(1)
        expect(again.inserted).toHaveLength(1)
        expect(again.duplicates).toBe(1)

        yield* startRelay(config)
        yield* waitUntilSettled(db.url, 2)
        const messages = yield* readTopics([topics.map.search_click!], { expected: 2 })
        expect(messages.map((m) => m.headers.dedup_key).sort()).toEqual(["order-42-paid", "order-43-paid"])
        expect(JSON.parse(messages.find((m) => m.headers.dedup_key === "order-42-paid")!.value!)).toEqual({ v: 1 })
      }),
    120_000,
  )

  it.live(
    "drains 5 000 events with two instances on one table: none missing, none duplicated, keys in order",
    () =>
      Effect.gen(function* () {
        const db = yield* testDatabase()
        const topics = yield* withTestTopics()
        const config = relayConfig(db.url, { ...topics.env, BATCH_SIZE: "200" })
        const written = events(5000, "pair", 200)
        yield* (yield* openStore(config)).append(written)
        yield* startRelay(config)
        yield* startRelay(config)
        yield* waitUntilSettled(db.url, written.length)

        const rows = yield* readRows(db.url)
        const messages = yield* readTopics(Object.values(topics.map), { expected: written.length })
        expect(rows.filter((r) => r.status === "SENT")).toHaveLength(5000)
        const perKey = new Map<string, number>()
        for (const m of messages) perKey.set(m.headers.dedup_key!, (perKey.get(m.headers.dedup_key!) ?? 0) + 1)
        expect(perKey.size).toBe(5000)
        expect([...perKey.values()].filter((n) => n > 1)).toEqual([])
        for (const seqs of sequencesByKey(messages).values()) expect(seqs).toEqual([...seqs].sort((a, b) => a - b))
      }),
    240_000,
  )

  it.live(
    "holds back only the events of a topic missing on the broker, and delivers them once it exists",
    () =>
      Effect.gen(function* () {
        const db = yield* testDatabase()
        const topics = yield* withTestTopics()
        const missingTopic = `${topics.map.search_click!}-not-yet`
        const config = relayConfig(db.url, {
          ...topics.env,
          TOPIC_MAP: JSON.stringify({ ...topics.map, search_click: missingTopic }),
          KAFKA_AUTO_CREATE_TOPICS: "false",
          BACKOFF_BASE_MS: "200",
          BACKOFF_MAX_MS: "500",
          MAX_ATTEMPTS: "1000",
        })
        const written = events(40, "missing-topic")
        yield* (yield* openStore(config)).append(written)
        yield* startRelay(config)

        const others = written.filter((e) => e.eventType !== "search_click")
        const delivered = yield* readTopics(
          Object.entries(topics.map)
            .filter(([t]) => t !== "search_click")
            .map(([, topic]) => topic),
          { expected: others.length },
        )
        expect(delivered).toHaveLength(others.length)
        const waiting = yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          return yield* sql<{ status: string; last_error: string | null }>`
            SELECT status, last_error FROM outbox_event WHERE event_type = 'search_click'`
        }).pipe(Effect.provide(sqlLayer(db.url)), Effect.orDie)
        expect(waiting.length).toBe(5)
        expect(waiting.every((r) => r.status !== "SENT")).toBe(true)

        yield* ensureTopics(inject("kafkaBrokers").split(","), [missingTopic]).pipe(Effect.orDie)
        yield* waitUntilSettled(db.url, written.length)
        const late = yield* readTopics([missingTopic], { expected: 5 })
        expect(late.map((m) => m.headers.dedup_key).sort()).toEqual(
          written
            .filter((e) => e.eventType === "search_click")
            .map((e) => e.dedupKey)
            .sort(),
        )
      }),
    120_000,
  )
})
