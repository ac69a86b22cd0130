/**
 * The idempotent consumer under hostile input and faults (issue 14), against the real Kafka
 * and PostgreSQL: header bytes that are not UTF-8, values PostgreSQL refuses, a stuck
 * message, a key whose offset was never committed, connections killed mid-transaction.
 * Each test reads its outcome back from Kafka (dead letters, committed offsets) and from
 * PostgreSQL (projection, inbox).
 */
import { randomBytes, randomUUID } from "node:crypto"
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Ref, Schedule } from "effect"
import { SqlClient } from "effect/sql"
import { applySearchClick, type SearchClick } from "../../examples/search-clicks-projection/projection.ts"
import type { ConsumedEvent } from "../../src/consumer.ts"
import {
  committedOffsets,
  createTopics,
  expectedCounts,
  inboxKeys,
  makeLogCapture,
  projectionDatabase,
  publishClicks,
  publishRaw,
  readClickCounts,
  readRaw,
  startProjection,
  type TestClick,
  waitForStats,
  waitUntil,
} from "../support/consumer-harness.ts"
import { sqlLayer } from "../support/test-database.ts"

const scenario = Effect.gen(function* () {
  const run = randomBytes(4).toString("hex")
  const topic = `test-${run}-clicks`
  const deadLetterTopic = `test-${run}-consumer-dlq`
  yield* createTopics([topic, deadLetterTopic])
  const db = yield* projectionDatabase
  return { run, topic, deadLetterTopic, groupId: `hostile-${run}`, db }
})

const clickValue = (query: string) => JSON.stringify({ query, resultId: "r-1", position: 1 })

/** Headers as the relay writes them, with `overrides` (Buffers for bytes no string can carry). */
const relayHeaders = (dedupKey: string | Buffer, overrides: Readonly<Record<string, Buffer | string>> = {}) => ({
  dedup_key: dedupKey,
  event_id: randomUUID(),
  event_type: "search_click",
  ...overrides,
})

/** The committed offset of the partition `key` went to equals its end: everything on it was settled and committed. */
const partitionFullyCommitted = (groupId: string, topic: string, partition: number) =>
  committedOffsets(groupId, topic).pipe(
    Effect.map((o) => (o.end[partition] !== undefined && o.committed[partition] === o.end[partition] ? o : undefined)),
  )

/** Five clicks that settle, then one whose handler is slow or stuck, all on one partition. */
const fiveThenOneSlow: ReadonlyArray<TestClick> = [
  ...Array.from({ length: 5 }, (_, i) => ({ dedupKey: `early-${i}`, query: "tent", aggregateKey: "one-session" })),
  { dedupKey: "slow", query: "socks", aggregateKey: "one-session" },
]

describe("idempotent consumer under hostile input and faults", () => {
  it.live(
    "dedup keys that are not valid UTF-8 are dead-lettered as invalid_dedup_key with their bytes intact; distinct keys never collide",
    () =>
      Effect.gen(function* () {
        const s = yield* scenario
        const bad = [0xff, 0xfe, 0xc3].map((b) => Buffer.concat([Buffer.from("s5-bad"), Buffer.from([b])]))
        yield* publishRaw(s.topic, [
          ...bad.map((key) => ({ key: "agg", value: clickValue("tent"), headers: relayHeaders(key) })),
          // Valid UTF-8 beyond ASCII is a key like any other.
          { key: "agg", value: clickValue("tent"), headers: relayHeaders("s5-café") },
          { key: "agg", value: clickValue("tent"), headers: relayHeaders("s5-caf\u00e9-2") },
          // event_id is written to the inbox, so it is held to the same rule.
          { key: "agg", value: clickValue("tent"), headers: relayHeaders("s5-bad-event-id", { event_id: Buffer.from([0x61, 0xff]) }) },
          // A value whose JSON would decode with U+FFFD in place of its bytes.
          {
            key: "agg",
            value: Buffer.concat([Buffer.from('{"query":"tent'), Buffer.from([0xff]), Buffer.from('","resultId":"r","position":1}')]),
            headers: relayHeaders("s5-bad-value"),
          },
        ])
        const consumer = yield* startProjection(s.db.url, s)
        const stats = yield* waitForStats(consumer, (st) => st.processed + st.deadLettered + st.duplicates === 7, 30_000)
        expect(stats).toMatchObject({ processed: 2, deadLettered: 5, duplicates: 0 })

        const letters = yield* readRaw(s.deadLetterTopic, 5)
        const reasons = letters.map((m) => m.headers["dlq.reason"]?.toString()).sort()
        expect(reasons).toEqual(["invalid_dedup_key", "invalid_dedup_key", "invalid_dedup_key", "invalid_header", "invalid_payload"])
        const deadKeys = letters
          .filter((m) => m.headers["dlq.reason"]?.toString() === "invalid_dedup_key")
          .map((m) => m.headers.dedup_key?.toString("hex"))
          .sort()
        expect(deadKeys).toEqual(bad.map((k) => k.toString("hex")).sort())
        const badEventId = letters.find((m) => m.headers["dlq.reason"]?.toString() === "invalid_header")
        expect(badEventId?.headers.event_id?.toString("hex")).toBe("61ff")
        expect(yield* inboxKeys(s.db.url, s.groupId)).toEqual(["s5-café", "s5-café-2"].sort())
        expect(yield* readClickCounts(s.db.url)).toEqual({ tent: 2 })
      }),
    60_000,
  )

  it.live(
    "a NUL in event_id is dead-lettered as invalid_header and an inbox row PostgreSQL rejects (SQLSTATE 23514) is retried, then dead-lettered as inbox_rejected; the partition moves on and is committed to its end",
    () =>
      Effect.gen(function* () {
        const s = yield* scenario
        // A rule of the user's schema that these keys break: the insert fails for this message only.
        yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          yield* sql`ALTER TABLE consumer_inbox ADD CONSTRAINT no_rejected_keys CHECK (dedup_key NOT LIKE 'rejected-%')`
        }).pipe(Effect.provide(sqlLayer(s.db.url)), Effect.orDie)
        yield* publishRaw(s.topic, [
          { key: "agg", value: clickValue("tent"), headers: relayHeaders("before") },
          { key: "agg", value: clickValue("tent"), headers: relayHeaders("nul-event-id", { event_id: "evt\u0000x" }) },
          { key: "agg", value: clickValue("tent"), headers: relayHeaders("rejected-1") },
          ...Array.from({ length: 8 }, (_, i) => ({ key: "agg", value: clickValue("socks"), headers: relayHeaders(`after-${i}`) })),
        ])
        const logs = makeLogCapture()
        const consumer = yield* startProjection(s.db.url, s).pipe(Effect.provide(logs.layer))
        const stats = yield* waitForStats(consumer, (st) => st.processed === 9 && st.deadLettered === 2, 30_000)
        expect(stats).toMatchObject({ processed: 9, deadLettered: 2, databaseOutages: 0 })

        const letters = yield* readRaw(s.deadLetterTopic, 2)
        const byReason = Object.fromEntries(letters.map((m) => [m.headers["dlq.reason"]?.toString(), m.headers]))
        expect(byReason.invalid_header?.dedup_key?.toString()).toBe("nul-event-id")
        expect(byReason.invalid_header?.["dlq.error"]?.toString()).toBe("event_id header contains a NUL byte")
        expect(byReason.inbox_rejected?.dedup_key?.toString()).toBe("rejected-1")
        expect(byReason.inbox_rejected?.["dlq.error"]?.toString()).toContain("23514")
        expect(byReason.inbox_rejected?.["dlq.attempts"]?.toString()).toBe("3")
        // The PostgreSQL error's code and message are in the log.
        expect(logs.lines.some((l) => l.includes("inbox row rejected") && l.includes("23514"))).toBe(true)

        const partition = letters[0]!.headers["dlq.original_partition"]!.toString()
        const offsets = yield* waitUntil(
          "the partition committed to its end",
          partitionFullyCommitted(s.groupId, s.topic, Number(partition)),
        )
        expect(offsets.committed[Number(partition)]).toBe(11)
        expect(yield* readClickCounts(s.db.url)).toEqual({ socks: 8, tent: 1 })
      }),
    60_000,
  )

  it.live(
    "one stuck message holds up only its own partition: clicks on the other partitions are applied while it waits",
    () =>
      Effect.gen(function* () {
        const s = yield* scenario
        const stuckStarted = yield* Deferred.make<ConsumedEvent<SearchClick>>()
        const handler = (event: ConsumedEvent<SearchClick>) =>
          event.dedupKey === "stuck" ? Deferred.succeed(stuckStarted, event).pipe(Effect.andThen(Effect.never)) : applySearchClick(event)
        yield* publishClicks(s.topic, [{ dedupKey: "stuck", query: "tent", aggregateKey: "stuck-session" }])
        const consumer = yield* startProjection(s.db.url, { ...s, handler, shutdownGrace: "200 millis" })
        const stuck = yield* Deferred.await(stuckStarted)

        // Published only once the consumer is stuck, so they need fetches after it.
        const others: ReadonlyArray<TestClick> = Array.from({ length: 60 }, (_, i) => ({
          dedupKey: `other-${i}`,
          query: "socks",
          aggregateKey: `session-${i}`,
        }))
        yield* publishClicks(s.topic, others)
        const ends = yield* committedOffsets(s.groupId, s.topic)
        // Messages behind the stuck one on its partition must wait; all others must flow.
        const onOtherPartitions = Object.entries(ends.end)
          .filter(([p]) => Number(p) !== stuck.partition)
          .reduce((n, [, end]) => n + end, 0)
        expect(onOtherPartitions).toBeGreaterThan(0)
        const stats = yield* waitForStats(consumer, (st) => st.processed === onOtherPartitions, 30_000)
        expect(stats.processed).toBe(onOtherPartitions)
        for (const [p] of Object.entries(ends.end).filter(([p]) => Number(p) !== stuck.partition)) {
          yield* waitUntil(`partition ${p} committed to its end`, partitionFullyCommitted(s.groupId, s.topic, Number(p)))
        }
        expect((yield* readClickCounts(s.db.url)).socks).toBe(onOtherPartitions)
      }),
    60_000,
  )

  it.live(
    "settled offsets ahead of a stuck message are committed on a timer, so cleanup may delete their keys and a restart does not apply them twice",
    () =>
      Effect.gen(function* () {
        const s = yield* scenario
        const sent = fiveThenOneSlow
        yield* publishClicks(s.topic, sent)
        const slowStarted = yield* Deferred.make<ConsumedEvent<SearchClick>>()
        const first = yield* startProjection(s.db.url, {
          ...s,
          handler: (event) =>
            event.dedupKey === "slow" ? Deferred.succeed(slowStarted, event).pipe(Effect.andThen(Effect.never)) : applySearchClick(event),
          inboxRetention: "1 second",
          cleanupInterval: "200 millis",
          shutdownGrace: "200 millis",
        })
        const slow = yield* Deferred.await(slowStarted)
        // The five before the slow one are committed while it is still in flight…
        const offsets = yield* waitUntil(
          "the settled offsets committed",
          committedOffsets(s.groupId, s.topic).pipe(
            Effect.map((o) => (o.committed[slow.partition] === Number(slow.offset) ? o : undefined)),
          ),
          10_000,
        )
        expect(offsets.committed[slow.partition]).toBe(5)
        // …so, once past the retention, their keys may go.
        yield* waitForStats(first, (st) => st.inboxExpired === 5, 10_000)
        expect(yield* inboxKeys(s.db.url, s.groupId)).toEqual([])

        // Killed with the slow message in flight; the next member starts from the committed offset.
        yield* first.stop
        const second = yield* startProjection(s.db.url, s)
        yield* waitUntil("the partition committed to its end", partitionFullyCommitted(s.groupId, s.topic, slow.partition))
        expect(yield* second.handle.stats).toMatchObject({ processed: 1, duplicates: 0 })
        expect(yield* readClickCounts(s.db.url)).toEqual(expectedCounts(sent.map((c) => c.query)))
      }),
    60_000,
  )

  it.live(
    "cleanup keeps expired keys whose offsets are not committed: after a crash they are skipped, not applied twice",
    () =>
      Effect.gen(function* () {
        const s = yield* scenario
        const sent = fiveThenOneSlow
        yield* publishClicks(s.topic, sent)
        const slowStarted = yield* Deferred.make<void>()
        const first = yield* startProjection(s.db.url, {
          ...s,
          handler: (event) =>
            event.dedupKey === "slow"
              ? Deferred.succeed(slowStarted, undefined).pipe(Effect.andThen(Effect.never))
              : applySearchClick(event),
          // Nothing is committed while the batch runs: the five stay uncommitted, however old.
          commitInterval: "1 hour",
          inboxRetention: "1 second",
          shutdownGrace: "200 millis",
        })
        yield* Deferred.await(slowStarted)
        // Let the keys pass the retention (time is the condition here, not an absence being awaited).
        yield* Effect.sleep("1500 millis")
        expect(yield* first.handle.deleteExpiredInboxKeys).toBe(0)
        expect(yield* inboxKeys(s.db.url, s.groupId)).toHaveLength(5)

        yield* first.stop
        const second = yield* startProjection(s.db.url, s)
        const stats = yield* waitForStats(second, (st) => st.processed === 1 && st.duplicates === 5, 30_000)
        expect(stats).toMatchObject({ processed: 1, duplicates: 5 })
        expect(yield* readClickCounts(s.db.url)).toEqual(expectedCounts(sent.map((c) => c.query)))
      }),
    60_000,
  )

  it.live(
    "connections killed with pg_terminate_backend mid-stream are waited out in place: no kafkajs error or restart, no handler failure, no dead letter, each click applied once",
    () =>
      Effect.gen(function* () {
        const s = yield* scenario
        const sent: ReadonlyArray<TestClick> = Array.from({ length: 300 }, (_, i) => ({
          dedupKey: `click-${i}`,
          query: ["tent", "socks", "stove"][i % 3]!,
          aggregateKey: `session-${i % 30}`,
        }))
        yield* publishClicks(s.topic, sent)
        const logs = makeLogCapture()
        const slowApply = (event: ConsumedEvent<SearchClick>) => Effect.sleep("5 millis").pipe(Effect.andThen(applySearchClick(event)))
        const consumer = yield* startProjection(s.db.url, {
          ...s,
          handler: slowApply,
          outageBackoff: { baseMs: 50, maxMs: 400 },
        }).pipe(Effect.provide(logs.layer))

        // Kill every backend of the consumer's database, again and again, while it works.
        const killed = yield* Ref.make(0)
        const killer = yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          const rows = yield* sql<{ pid: number }>`
            SELECT pid FROM pg_stat_activity WHERE datname = ${s.db.name} AND pid <> pg_backend_pid() AND backend_type = 'client backend'`
          for (const row of rows) yield* sql`SELECT pg_terminate_backend(${row.pid})`
          yield* Ref.update(killed, (n) => n + rows.length)
        }).pipe(
          Effect.repeat(Schedule.spaced("150 millis")),
          Effect.provide(sqlLayer(s.db.url.replace(/\/[^/]+$/, "/postgres"))),
          Effect.orDie,
          Effect.forkChild,
        )
        yield* waitForStats(consumer, (st) => st.processed >= 200 && st.databaseOutages >= 3, 60_000)
        yield* Fiber.interrupt(killer)
        // A COMMIT whose reply was lost with its connection may have committed: the retry then
        // finds the key and counts a duplicate. Either way the click is applied exactly once.
        const stats = yield* waitForStats(consumer, (st) => st.processed + st.duplicates >= 300, 60_000)
        console.log(`[pg_terminate_backend] ${yield* Ref.get(killed)} backends killed; consumer stats ${JSON.stringify(stats)}`)

        expect(stats).toMatchObject({ deadLettered: 0, handlerFailures: 0, kafkaRestarts: 0 })
        expect(stats.databaseOutages).toBeGreaterThan(0)
        const escaped = logs.lines.filter((l) => /crashed|eachBatch|batch failed/i.test(l))
        expect(escaped).toEqual([])
        expect(yield* readClickCounts(s.db.url)).toEqual(expectedCounts(sent.map((c) => c.query)))
        expect(yield* inboxKeys(s.db.url, s.groupId)).toHaveLength(300)
      }),
    120_000,
  )
})
