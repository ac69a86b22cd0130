/**
 * End to end: a service writes clicks with the writer in its own transactions, the relay
 * publishes them (and, after a forced lease takeover, publishes some twice), and the
 * idempotent consumer keeps a projection in another database. Kafka really holds the
 * duplicates; the projection counts each click once.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Schema, Scope } from "effect"
import { SqlClient } from "effect/sql"
import { writeEvent, writeEvents } from "../../src/writer.ts"
import {
  expectedCounts,
  inboxKeys,
  projectionDatabase,
  readClickCounts,
  startProjection,
  waitForStats,
  waitUntilFullyCommitted,
} from "../support/consumer-harness.ts"
import { readTopics } from "../support/kafka-reader.ts"
import { relayConfig, startRelay, withTestTopics } from "../support/relay-harness.ts"
import { sqlLayer, testDatabase } from "../support/test-database.ts"

const QUERIES = ["Running Shoes", "running shoes", "trail shoes", "socks", "rain jacket", "tent", "stove"]
const TRANSACTIONS = 30
const PER_TRANSACTION = 8

class PaymentDeclined extends Schema.TaggedError<PaymentDeclined>()("PaymentDeclined", {}) {}

const click = (t: number, i: number) => {
  const n = t * PER_TRANSACTION + i
  const query = QUERIES[n % QUERIES.length]!
  return {
    eventType: "search_click",
    dedupKey: `click-${t}-${i}`,
    aggregateKey: query.toLowerCase(),
    payload: { query, resultId: `result-${n}`, position: n % 10 },
  }
}

/** The service: each transaction logs the searches it served and writes their click events, or neither. */
const serveSearches = (url: string) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    yield* sql`CREATE TABLE served_search (id serial PRIMARY KEY, query text NOT NULL)`
    const committed: Array<ReturnType<typeof click>> = []
    for (let t = 0; t < TRANSACTIONS; t++) {
      const batch = Array.from({ length: PER_TRANSACTION }, (_, i) => click(t, i))
      const outcome = yield* sql
        .withTransaction(
          Effect.gen(function* () {
            for (const c of batch) yield* sql`INSERT INTO served_search (query) VALUES (${c.payload.query})`
            yield* writeEvents(batch)
            // Every fifth transaction fails after writing: its searches and its events vanish together.
            if (t % 5 === 4) return yield* new PaymentDeclined()
          }),
        )
        .pipe(Effect.result)
      if (outcome._tag === "Success") committed.push(...batch)
    }
    // A client retry of an already committed write: one event, not two.
    const retried = yield* writeEvent(click(0, 0))
    expect(retried._tag).toBe("Duplicate")
    const [served] = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM served_search`
    expect(served!.n).toBe(committed.length)
    return committed
  }).pipe(Effect.provide(sqlLayer(url)))

const waitUntilAllSent = (url: string) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    for (let i = 0; i < 600; i++) {
      const [row] = yield* sql<{ pending: number }>`SELECT count(*) FILTER (WHERE status <> 'SENT')::int AS pending FROM outbox_event`
      if (row!.pending === 0) return
      yield* Effect.sleep("100 millis")
    }
    return yield* Effect.die(new Error("the relay did not send every event within 60 s"))
  }).pipe(Effect.provide(sqlLayer(url)))

/**
 * What an expired lease leaves behind: rows instance A had published whose lease ran out
 * before A marked them SENT (a GC pause, a slow database). They are due again and held by
 * a lease in the past, so the next claim takes them over and publishes them a second time.
 */
const expireLeasesOfPublishedRows = (url: string, everyNth: number) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const rows = yield* sql<{ dedup_key: string }>`
      UPDATE outbox_event
         SET status = 'NEW', sent_at = NULL, locked_by = 'relay-a', locked_until = now() - interval '1 second'
       WHERE id % ${everyNth} = 0
      RETURNING dedup_key`
    return rows.map((r) => r.dedup_key)
  }).pipe(Effect.provide(sqlLayer(url)), Effect.orDie)

describe("effectively once, end to end", () => {
  it.live(
    "writer → relay with a lease takeover that duplicates on Kafka → idempotent consumer: the projection counts each click once",
    () =>
      Effect.gen(function* () {
        const outboxDb = yield* testDatabase()
        const projectionDb = yield* projectionDatabase
        const topics = yield* withTestTopics(["search_click"])
        const topic = topics.map.search_click!
        const groupId = `search-clicks-${topic}`

        const committed = yield* serveSearches(outboxDb.url)
        expect(committed).toHaveLength((TRANSACTIONS - TRANSACTIONS / 5) * PER_TRANSACTION)

        const consumer = yield* startProjection(projectionDb.url, { groupId, topic, deadLetterTopic: topics.dlq })

        // Relay instance A publishes everything, then stops.
        const relayA = yield* Scope.make()
        yield* startRelay(relayConfig(outboxDb.url, topics.env)).pipe(Scope.provide(relayA))
        yield* waitUntilAllSent(outboxDb.url)
        yield* waitForStats(consumer, (s) => s.processed === committed.length)
        yield* Scope.close(relayA, Exit.void)

        // A's lease on every 6th row expires as if A had stalled before marking; instance B takes them over.
        const takenOver = yield* expireLeasesOfPublishedRows(outboxDb.url, 6)
        expect(takenOver.length).toBeGreaterThan(0)
        yield* startRelay(relayConfig(outboxDb.url, topics.env))
        yield* waitUntilAllSent(outboxDb.url)

        const total = committed.length + takenOver.length
        const messages = yield* readTopics([topic], { expected: total })
        const copies = new Map<string, number>()
        for (const m of messages) copies.set(m.headers.dedup_key!, (copies.get(m.headers.dedup_key!) ?? 0) + 1)
        const duplicatedOnKafka = [...copies].filter(([, n]) => n > 1).map(([key]) => key)

        const stats = yield* waitForStats(consumer, (s) => s.processed + s.duplicates === total)
        // Past this point nothing can be delivered to the group again, so its counts are final.
        yield* waitUntilFullyCommitted(groupId, topic)
        const finalStats = yield* consumer.handle.stats
        console.log(
          [
            "[effectively-once] duplicate counts",
            `  events committed by the service:        ${committed.length} (${TRANSACTIONS / 5} transactions rolled back, 1 client retry deduplicated by the writer)`,
            `  rows re-claimed after lease expiry:     ${takenOver.length}`,
            `  messages on Kafka:                      ${messages.length} (${duplicatedOnKafka.length} dedup keys delivered twice)`,
            `  consumer processed:                     ${finalStats.processed}`,
            `  consumer duplicates skipped:            ${finalStats.duplicates}`,
            `  consumer dead-lettered:                 ${finalStats.deadLettered}`,
          ].join("\n"),
        )

        // Kafka really holds the duplicates the takeover made…
        expect(messages).toHaveLength(total)
        expect(duplicatedOnKafka.sort()).toEqual([...takenOver].sort())
        // …and the consumer applied each event once and skipped each copy.
        expect(stats).toMatchObject({ processed: committed.length, duplicates: takenOver.length, deadLettered: 0 })
        expect(finalStats).toEqual(stats)
        expect(yield* inboxKeys(projectionDb.url, groupId)).toEqual(committed.map((c) => c.dedupKey).sort())
        const normalized = committed.map((c) => c.payload.query.trim().toLowerCase())
        expect(yield* readClickCounts(projectionDb.url)).toEqual(expectedCounts(normalized))
      }),
    240_000,
  )
})
