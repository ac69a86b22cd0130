/**
 * Every dead-letter route ends in a state (issue 20, N2, N3), against the real Kafka and
 * PostgreSQL: a dead letter the dead-letter topic refuses for its size is sent trimmed, and
 * when even that is refused it is recorded in consumer_dead_letter; messages whose headers
 * are more than the consumer accepts (10,000 of them included) are dead-lettered without
 * stalling the group. Outcomes are read back from the dead-letter topic, the table, the
 * committed offsets and the log.
 */
import { randomBytes, randomUUID } from "node:crypto"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import { Kafka } from "../../src/kafka/kafkajs.ts"
import {
  brokers,
  committedOffsets,
  createTopics,
  makeLogCapture,
  projectionDatabase,
  publishRaw,
  readClickCounts,
  readRaw,
  startProjection,
  waitForStats,
  waitUntil,
} from "../support/consumer-harness.ts"
import { sqlLayer } from "../support/test-database.ts"

/** A dead-letter topic that takes records up to `maxMessageBytes` (the broker's default is about 1 MB). */
const createSmallTopic = (topic: string, maxMessageBytes: number) =>
  Effect.promise(async () => {
    const admin = new Kafka({ clientId: "test-small-topic", brokers: brokers(), logLevel: 1 }).admin()
    await admin.connect()
    try {
      await admin.createTopics({
        waitForLeaders: true,
        topics: [
          { topic, numPartitions: 1, replicationFactor: 1, configEntries: [{ name: "max.message.bytes", value: String(maxMessageBytes) }] },
        ],
      })
    } finally {
      await admin.disconnect()
    }
  })

const scenario = (dlqMaxMessageBytes?: number) =>
  Effect.gen(function* () {
    const run = randomBytes(4).toString("hex")
    const topic = `test-${run}-clicks`
    const deadLetterTopic = `test-${run}-consumer-dlq`
    yield* createTopics([topic])
    if (dlqMaxMessageBytes === undefined) yield* createTopics([deadLetterTopic])
    else yield* createSmallTopic(deadLetterTopic, dlqMaxMessageBytes)
    const db = yield* projectionDatabase
    return { run, topic, deadLetterTopic, groupId: `dlq-routes-${run}`, db }
  })

const clickValue = (query: string) => JSON.stringify({ query, resultId: "r-1", position: 1 })
const relayHeaders = (dedupKey: string) => ({ dedup_key: dedupKey, event_id: randomUUID(), event_type: "search_click" })
const goodClicks = (n: number) =>
  Array.from({ length: n }, (_, i) => ({ key: "agg", value: clickValue("socks"), headers: relayHeaders(`good-${i}`) }))

const partitionCommittedTo = (groupId: string, topic: string, end: number) =>
  committedOffsets(groupId, topic).pipe(Effect.map((o) => (o.committed[0] === end ? o : undefined)))

describe("idempotent consumer: every dead-letter route ends in a state", () => {
  it.live(
    "a dead letter the topic refuses for its size is sent trimmed (value omitted, then key and headers omitted); no log line carries a whole oversized key; the partition moves on (N3)",
    () =>
      Effect.gen(function* () {
        const s = yield* scenario(4000)
        const hugeKey = `k-${"x".repeat(5000)}`
        yield* publishRaw(s.topic, [
          // Not JSON, 20 kB: its dead letter fits once the value is left out.
          { partition: 0, key: "agg", value: `not json ${"y".repeat(20_000)}`, headers: relayHeaders("big-value") },
          // A 5 kB dedup_key (invalid): its dead letter fits only without the original key and headers.
          { partition: 0, key: hugeKey, value: clickValue("tent"), headers: relayHeaders(hugeKey) },
          ...goodClicks(5).map((m) => ({ ...m, partition: 0 })),
        ])
        const logs = makeLogCapture()
        const consumer = yield* startProjection(s.db.url, s).pipe(Effect.provide(logs.layer))
        const stats = yield* waitForStats(consumer, (st) => st.deadLettered === 2 && st.processed === 5, 30_000)
        expect(stats).toMatchObject({ processed: 5, deadLettered: 2, deadLettersTrimmed: 2, deadLettersInTable: 0 })

        const letters = yield* readRaw(s.deadLetterTopic, 2)
        const byOffset = Object.fromEntries(letters.map((m) => [m.headers["dlq.original_offset"]?.toString(), m.headers]))
        expect(byOffset["0"]?.["dlq.reason"]?.toString()).toBe("invalid_payload")
        expect(byOffset["0"]?.["dlq.trimmed"]?.toString()).toBe("value")
        expect(byOffset["0"]?.["dlq.original_value_bytes"]?.toString()).toBe("20009")
        expect(byOffset["0"]?.dedup_key?.toString()).toBe("big-value")
        expect(byOffset["1"]?.["dlq.reason"]?.toString()).toBe("invalid_dedup_key")
        expect(byOffset["1"]?.["dlq.trimmed"]?.toString()).toBe("value_key_headers")
        expect(byOffset["1"]?.dedup_key).toBeUndefined()

        yield* waitUntil("the partition committed to its end", partitionCommittedTo(s.groupId, s.topic, 7))
        expect(yield* readClickCounts(s.db.url)).toEqual({ socks: 5 })
        const longest = Math.max(...logs.lines.map((l) => l.length))
        expect(longest).toBeLessThan(3000)
      }),
    60_000,
  )

  it.live(
    "a dead letter the topic refuses even trimmed is recorded in consumer_dead_letter with its position and bytes, logged at ERROR and counted; the partition moves on (N3)",
    () =>
      Effect.gen(function* () {
        const s = yield* scenario(64)
        const value = Buffer.from(`not json ${"z".repeat(2000)}`)
        yield* publishRaw(s.topic, [
          { partition: 0, key: "agg", value, headers: relayHeaders("refused-everywhere") },
          ...goodClicks(5).map((m) => ({ ...m, partition: 0 })),
        ])
        const logs = makeLogCapture()
        const consumer = yield* startProjection(s.db.url, s).pipe(Effect.provide(logs.layer))
        const stats = yield* waitForStats(consumer, (st) => st.deadLettersInTable === 1 && st.processed === 5, 30_000)
        expect(stats).toMatchObject({ processed: 5, deadLettered: 0, deadLettersInTable: 1 })

        const rows = yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          return yield* sql<{
            consumer_group: string
            topic: string
            kafka_partition: number
            kafka_offset: string
            dedup_key: string | null
            reason: string
            message_value: Uint8Array
            dlq_error: string
          }>`SELECT consumer_group, topic, kafka_partition, kafka_offset::text, dedup_key, reason, message_value, dlq_error FROM consumer_dead_letter`
        }).pipe(Effect.provide(sqlLayer(s.db.url)), Effect.orDie)
        expect(rows).toHaveLength(1)
        expect(rows[0]).toMatchObject({
          consumer_group: s.groupId,
          topic: s.topic,
          kafka_partition: 0,
          kafka_offset: "0",
          dedup_key: "refused-everywhere",
          reason: "invalid_payload",
        })
        expect(Buffer.from(rows[0]!.message_value).equals(value)).toBe(true)
        expect(rows[0]?.dlq_error).toContain("message_too_large")
        expect(logs.lines.some((l) => l.startsWith("Error") && l.includes("recorded in consumer_dead_letter"))).toBe(true)
        yield* waitUntil("the partition committed to its end", partitionCommittedTo(s.groupId, s.topic, 6))
        expect(yield* readClickCounts(s.db.url)).toEqual({ socks: 5 })
      }),
    60_000,
  )

  it.live(
    "10,000 headers on one message decode at once and are dead-lettered as oversized_headers, as are headers over maxHeaderBytes; the group does not stall (N2)",
    () =>
      Effect.gen(function* () {
        const s = yield* scenario()
        const many = Object.fromEntries(Array.from({ length: 10_000 }, (_, i) => [`h-${i}`, "v"]))
        const heavy = { big1: "a".repeat(40_000), big2: "b".repeat(40_000) }
        yield* publishRaw(s.topic, [
          { partition: 0, key: "agg", value: clickValue("tent"), headers: { ...relayHeaders("many-headers"), ...many } },
          { partition: 0, key: "agg", value: clickValue("tent"), headers: { ...relayHeaders("heavy-headers"), ...heavy } },
          ...goodClicks(5).map((m) => ({ ...m, partition: 0 })),
        ])
        const consumer = yield* startProjection(s.db.url, s)
        // Unpatched, decoding the first message alone took about two minutes.
        const stats = yield* waitForStats(consumer, (st) => st.deadLettered === 2 && st.processed === 5, 30_000)
        expect(stats).toMatchObject({ processed: 5, deadLettered: 2 })
        const letters = yield* readRaw(s.deadLetterTopic, 2)
        const errors = letters.map((m) => `${m.headers["dlq.reason"]?.toString()}: ${m.headers["dlq.error"]?.toString()}`).sort()
        expect(errors).toEqual([
          "oversized_headers: 10003 headers, more than maxHeaders (100)",
          expect.stringMatching(/^oversized_headers: headers of \d+ bytes, more than maxHeaderBytes \(65536\)$/),
        ])
        expect(yield* readClickCounts(s.db.url)).toEqual({ socks: 5 })
      }),
    60_000,
  )
})
