/**
 * The idempotent consumer against the real Kafka and PostgreSQL: however often a message
 * is delivered (re-published, redelivered after a crash, replayed from the dead-letter
 * topic), the projection read back from PostgreSQL is what one delivery gives.
 */
import { randomBytes } from "node:crypto"
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Layer, Ref, Tracer } from "effect"
import { SqlClient } from "effect/sql"
import { applySearchClick, type SearchClick } from "../../examples/search-clicks-projection/projection.ts"
import type { ConsumedEvent, MessageOutcome } from "../../src/consumer.ts"
import {
  createTopics,
  expectedCounts,
  failingWhile,
  inboxKeys,
  projectionDatabase,
  publishClicks,
  publishRaw,
  readClickCounts,
  replayDeadLetters,
  republish,
  setCommittedOffsets,
  startProjection,
  type TestClick,
  waitForStats,
  waitUntil,
  waitUntilFullyCommitted,
} from "../support/consumer-harness.ts"
import { readTopics } from "../support/kafka-reader.ts"
import { sqlLayer } from "../support/test-database.ts"

const QUERIES = ["running shoes", "trail shoes", "socks", "rain jacket", "tent"]

const clicks = (n: number, prefix: string): ReadonlyArray<TestClick> =>
  Array.from({ length: n }, (_, i) => ({ dedupKey: `${prefix}-${i}`, query: QUERIES[i % QUERIES.length]! }))

const scenario = Effect.gen(function* () {
  const run = randomBytes(4).toString("hex")
  const topic = `test-${run}-clicks`
  const deadLetterTopic = `test-${run}-consumer-dlq`
  yield* createTopics([topic, deadLetterTopic])
  const db = yield* projectionDatabase
  return { run, topic, deadLetterTopic, groupId: `projection-${run}`, db }
})

describe("idempotent consumer", () => {
  it.live(
    "applies re-published messages once: every copy is skipped as a duplicate and the projection is unchanged",
    () =>
      Effect.gen(function* () {
        const s = yield* scenario
        const sent = clicks(60, "click")
        yield* publishClicks(s.topic, sent)
        const consumer = yield* startProjection(s.db.url, s)
        yield* waitForStats(consumer, (st) => st.processed === 60)
        const original = yield* readTopics([s.topic], { expected: 60 })

        yield* republish(original)
        yield* waitForStats(consumer, (st) => st.duplicates === 60)
        yield* waitUntilFullyCommitted(s.groupId, s.topic)
        const stats = yield* consumer.handle.stats

        expect(yield* readClickCounts(s.db.url)).toEqual(expectedCounts(sent.map((c) => c.query)))
        expect(yield* inboxKeys(s.db.url, s.groupId)).toEqual(sent.map((c) => c.dedupKey).sort())
        expect(yield* consumer.handle.stats).toEqual({ ...stats, processed: 60, duplicates: 60, deadLettered: 0 })
      }),
    120_000,
  )

  it.live(
    "a consumer killed after its handler committed but before the offset commit: the next one skips that message, nothing lost or doubled",
    () =>
      Effect.gen(function* () {
        const s = yield* scenario
        const sent = clicks(40, "crash")
        yield* publishClicks(s.topic, sent)
        const crashPoint = yield* Deferred.make<MessageOutcome>()
        const settledBeforeCrash = yield* Ref.make(0)
        const first = yield* startProjection(s.db.url, {
          ...s,
          // Offsets would otherwise be committed at the end of the batch; the kill comes first.
          commitInterval: "1 hour",
          shutdownGrace: "200 millis",
          // From the 25th settled message on, every partition's batch hangs before its offset commit.
          afterMessage: (outcome) =>
            Ref.updateAndGet(settledBeforeCrash, (n) => n + 1).pipe(
              Effect.flatMap((n) => (n < 25 ? Effect.void : Deferred.succeed(crashPoint, outcome).pipe(Effect.andThen(Effect.never)))),
            ),
        })
        const crashedAt = yield* Deferred.await(crashPoint)
        yield* first.stop
        const firstStats = yield* first.handle.stats
        expect(crashedAt._tag).toBe("Processed")
        // Partitions run side by side, so others may settle a message or two while the first hangs.
        expect(firstStats.processed).toBeGreaterThanOrEqual(25)
        // The transaction of the 25th message committed: its key is in the inbox although its offset is not.
        expect(yield* inboxKeys(s.db.url, s.groupId)).toContain(crashedAt.dedupKey)

        const second = yield* startProjection(s.db.url, s)
        yield* waitForStats(second, (st) => st.processed + firstStats.processed === 40)
        yield* waitUntilFullyCommitted(s.groupId, s.topic)
        const secondStats = yield* second.handle.stats
        console.log(
          `[consumer crash] first consumer processed ${firstStats.processed}; second processed ${secondStats.processed}, skipped ${secondStats.duplicates} duplicates`,
        )

        expect(secondStats.duplicates).toBeGreaterThanOrEqual(1)
        expect(secondStats.processed).toBe(40 - firstStats.processed)
        expect(yield* readClickCounts(s.db.url)).toEqual(expectedCounts(sent.map((c) => c.query)))
        expect(yield* inboxKeys(s.db.url, s.groupId)).toHaveLength(40)
      }),
    120_000,
  )

  it.live(
    "a handler failing past its retries dead-letters the message with error headers and moves on; replaying the dead letters twice applies each once",
    () =>
      Effect.gen(function* () {
        const s = yield* scenario
        const sent = clicks(30, "dlq")
        const broken = yield* Ref.make(true)
        const failing = (e: ConsumedEvent<SearchClick>) => e.payload.query === "socks" && Ref.getUnsafe(broken)
        yield* publishClicks(s.topic, sent)
        // Two messages no retry can help: no dedup_key header, and a value that is not a click.
        yield* republish([
          { topic: s.topic, key: "x", value: JSON.stringify({ query: "lost" }), headers: { event_type: "search_click" } },
          { topic: s.topic, key: "y", value: JSON.stringify({ nope: true }), headers: { dedup_key: "bad-payload" } },
        ])
        const consumer = yield* startProjection(s.db.url, { ...s, handler: failingWhile(failing, applySearchClick) })
        const socks = sent.filter((c) => c.query === "socks")
        const stats = yield* waitForStats(consumer, (st) => st.processed + st.deadLettered === 32)
        expect(stats).toMatchObject({ processed: 30 - socks.length, deadLettered: socks.length + 2, handlerFailures: socks.length * 3 })

        const letters = yield* readTopics([s.deadLetterTopic], { expected: socks.length + 2 })
        const byReason = (reason: string) => letters.filter((m) => m.headers["dlq.reason"] === reason)
        expect(
          byReason("handler_failed")
            .map((m) => m.headers.dedup_key)
            .sort(),
        ).toEqual(socks.map((c) => c.dedupKey).sort())
        for (const letter of byReason("handler_failed")) {
          expect(letter.headers).toMatchObject({
            "dlq.error": `handler cannot apply ${letter.headers.dedup_key} yet`,
            "dlq.attempts": "3",
            "dlq.consumer_group": s.groupId,
            "dlq.original_topic": s.topic,
          })
        }
        expect(byReason("missing_dedup_key")).toHaveLength(1)
        expect(byReason("invalid_payload").map((m) => m.headers["dlq.attempts"])).toEqual(["0"])
        expect((yield* readClickCounts(s.db.url)).socks).toBeUndefined()
        // Dead-lettered messages were committed past: the group is at the end of every partition.
        const offsets = yield* waitUntilFullyCommitted(s.groupId, s.topic)
        expect(offsets.committed).toEqual(offsets.end)

        // The bug is fixed; the dead letters are replayed, then replayed again by mistake.
        yield* Ref.set(broken, false)
        const replayable = byReason("handler_failed")
        yield* replayDeadLetters(replayable)
        yield* replayDeadLetters(replayable)
        yield* waitForStats(consumer, (st) => st.duplicates === socks.length && st.processed === 30)
        yield* waitUntilFullyCommitted(s.groupId, s.topic)
        const after = yield* consumer.handle.stats
        expect(after.deadLettered).toBe(socks.length + 2)
        expect(yield* readClickCounts(s.db.url)).toEqual(expectedCounts(sent.map((c) => c.query)))
      }),
    120_000,
  )

  it.live(
    "continues the message's trace: the processing span's parent is the span named by the traceparent header",
    () =>
      Effect.gen(function* () {
        const s = yield* scenario
        const spans: Array<Tracer.NativeSpan> = []
        const tracer = Tracer.make({
          span(options) {
            const span = new Tracer.NativeSpan(options)
            spans.push(span)
            return span
          },
        })
        const traceId = randomBytes(16).toString("hex")
        const parentSpanId = randomBytes(8).toString("hex")
        yield* publishClicks(s.topic, [{ dedupKey: "traced-click", query: "tent", traceparent: `00-${traceId}-${parentSpanId}-01` }])
        const seen = yield* Deferred.make<{ readonly traceId: string; readonly parent: string | undefined }>()
        const consumer = yield* startProjection(s.db.url, {
          ...s,
          handler: (event) =>
            Effect.gen(function* () {
              yield* applySearchClick(event)
              const span = yield* Effect.currentSpan
              const processSpan = spans.find((x) => x.name === `${s.topic} process`)
              yield* Deferred.succeed(seen, {
                traceId: span.traceId,
                parent: processSpan?.parent._tag === "Some" ? processSpan.parent.value.spanId : undefined,
              })
            }),
        }).pipe(Effect.provide(Layer.succeed(Tracer.Tracer, tracer)))
        const observed = yield* Deferred.await(seen)
        yield* waitForStats(consumer, (st) => st.processed === 1)
        expect(observed).toEqual({ traceId, parent: parentSpanId })
        expect(spans.find((x) => x.name === `${s.topic} process`)?.kind).toBe("consumer")
      }),
    60_000,
  )

  it.live(
    "a rebalance mid-batch abandons the batch uncommitted; the partition's next owner skips what was applied, and every event counts once",
    () =>
      Effect.gen(function* () {
        const s = yield* scenario
        const sent = clicks(180, "rebalance").map((c, i) => ({ ...c, aggregateKey: `session-${i % 12}` }))
        yield* publishClicks(s.topic, sent)
        // Slow handlers make each partition's batch last seconds, so the rebalance lands inside one;
        // no commits until a batch ends, so whatever the revoked batch applied comes again.
        const slow = (event: ConsumedEvent<SearchClick>) => Effect.sleep("40 millis").pipe(Effect.andThen(applySearchClick(event)))
        const options = { ...s, handler: slow, commitInterval: "1 hour" } as const
        const a = yield* startProjection(s.db.url, options)
        yield* waitForStats(a, (st) => st.processed >= 10)
        const b = yield* startProjection(s.db.url, options)
        yield* waitUntil(
          "all 180 clicks processed by A and B",
          Effect.all([a.handle.stats, b.handle.stats]).pipe(
            Effect.map(([sa, sb]) => (sa.processed + sb.processed >= 180 ? true : undefined)),
          ),
          60_000,
        )
        yield* waitUntilFullyCommitted(s.groupId, s.topic, 60_000)
        const [sa, sb] = [yield* a.handle.stats, yield* b.handle.stats]
        console.log(
          `[rebalance] consumer A processed ${sa.processed} (skipped ${sa.duplicates}), consumer B processed ${sb.processed} (skipped ${sb.duplicates})`,
        )
        expect(sa.processed + sb.processed).toBe(180)
        expect(sa.duplicates + sb.duplicates).toBeGreaterThan(0)
        expect(sb.processed).toBeGreaterThan(0)
        expect(yield* readClickCounts(s.db.url)).toEqual(expectedCounts(sent.map((c) => c.query)))
        expect(yield* inboxKeys(s.db.url, s.groupId)).toHaveLength(180)
      }),
    120_000,
  )

  it.live(
    "deletes inbox keys older than the retention whose offsets the group committed, in batches, in the background; keeps newer keys, uncommitted keys and other groups' keys",
    () =>
      Effect.gen(function* () {
        const s = yield* scenario
        yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          yield* sql`
            INSERT INTO consumer_inbox (consumer_group, dedup_key, topic, kafka_partition, kafka_offset, processed_at)
            SELECT ${s.groupId}, 'old-' || i, ${s.topic}, 0, i, now() - interval '3 hours' FROM generate_series(0, 24) i
            UNION ALL SELECT ${s.groupId}, 'uncommitted-' || i, ${s.topic}, 0, 30 + i, now() - interval '3 hours' FROM generate_series(1, 5) i
            UNION ALL SELECT ${s.groupId}, 'new-' || i, ${s.topic}, 1, i, now() - interval '10 minutes' FROM generate_series(1, 5) i
            UNION ALL SELECT 'other-group', 'old-' || i, ${s.topic}, 0, i, now() - interval '3 hours' FROM generate_series(1, 5) i`
        }).pipe(Effect.provide(sqlLayer(s.db.url)), Effect.orDie)
        // What an earlier run left in Kafka: 30 messages on partition 0, committed up to their end.
        yield* publishRaw(
          s.topic,
          Array.from({ length: 30 }, (_, i) => ({
            partition: 0,
            key: "k",
            value: JSON.stringify({ query: "tent", resultId: "r", position: 0 }),
            headers: { dedup_key: `old-${i}` },
          })),
        )
        yield* setCommittedOffsets(s.groupId, s.topic, [{ partition: 0, offset: "30" }])
        const consumer = yield* startProjection(s.db.url, {
          ...s,
          inboxRetention: "1 hour",
          cleanupInterval: "200 millis",
          cleanupBatchSize: 10,
        })
        yield* waitForStats(consumer, (st) => st.inboxExpired === 25, 20_000)
        expect(yield* inboxKeys(s.db.url, s.groupId)).toEqual(
          [...[1, 2, 3, 4, 5].map((i) => `new-${i}`), ...[1, 2, 3, 4, 5].map((i) => `uncommitted-${i}`)].sort(),
        )
        expect(yield* inboxKeys(s.db.url, "other-group")).toHaveLength(5)
        expect(yield* consumer.handle.deleteExpiredInboxKeys).toBe(0)
      }),
    60_000,
  )
})
