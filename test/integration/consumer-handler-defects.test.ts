/**
 * Handlers that break the consumer's contract (issue 20, N5, N6, the hung handler), against
 * the real Kafka and PostgreSQL: a handler that returns a Promise, throws, throws a Proxy,
 * dies; one that runs COMMIT or ROLLBACK itself; one that never returns. Each must roll back,
 * release its connection, be retried or dead-lettered, and leave the partition moving; each
 * outcome is read back from Kafka (the dead letters), PostgreSQL (projection, inbox,
 * pg_stat_activity) and the consumer's counts, gauge and log.
 */
import { randomBytes } from "node:crypto"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Metric } from "effect"
import { SqlClient } from "effect/sql"
import { applySearchClick, type SearchClick } from "../../examples/search-clicks-projection/projection.ts"
import { consumerOldestInFlight } from "../../src/consumer/consumer-stats.ts"
import type { ConsumedEvent } from "../../src/consumer.ts"
import {
  createTopics,
  expectedCounts,
  inboxKeys,
  makeLogCapture,
  projectionDatabase,
  publishClicks,
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
  return { run, topic, deadLetterTopic, groupId: `defects-${run}`, db }
})

/** The bad clicks first, then good ones, all on one partition: the good ones prove the partition moved on. */
const badThenGood = (bad: ReadonlyArray<string>): ReadonlyArray<TestClick> => [
  ...bad.map((dedupKey) => ({ dedupKey, query: "tent", aggregateKey: "one-session" })),
  ...Array.from({ length: 5 }, (_, i) => ({ dedupKey: `good-${i}`, query: "socks", aggregateKey: "one-session" })),
]

/** Sessions of the database left inside a transaction (a leaked inbox transaction holds its row lock). */
const sessionsInTransaction = (url: string, database: string) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const [row] = yield* sql<{ n: number }>`
      SELECT count(*)::int AS n FROM pg_stat_activity
       WHERE datname = ${database} AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'`
    return row?.n ?? 0
  }).pipe(Effect.provide(sqlLayer(url)), Effect.orDie)

const letterHeaders = (letters: ReadonlyArray<{ readonly headers: Readonly<Record<string, Buffer>> }>) =>
  Object.fromEntries(
    letters.map((m) => [
      m.headers.dedup_key?.toString() ?? "",
      Object.fromEntries(Object.entries(m.headers).map(([k, v]) => [k, v.toString()])),
    ]),
  )

describe("idempotent consumer with a handler that breaks its contract", () => {
  it.live(
    "a handler that returns a Promise, throws, throws a Proxy or dies is rolled back with its connection released, retried, then dead-lettered as handler_failed without file paths; the partition moves on and stop ends (N5)",
    () =>
      Effect.gen(function* () {
        const s = yield* scenario
        const bad = ["returns-promise", "throws", "throws-proxy", "dies"]
        const sent = badThenGood(bad)
        yield* publishClicks(s.topic, sent)
        const handler = (event: ConsumedEvent<SearchClick>): Effect.Effect<void, unknown, SqlClient.SqlClient> => {
          switch (event.dedupKey) {
            case "returns-promise":
              // An `async` handler: it writes, then hands back a Promise where an Effect belongs.
              return Promise.resolve() as unknown as Effect.Effect<void>
            case "throws":
              throw new Error("handler threw outside any Effect")
            case "throws-proxy":
              throw new Proxy(
                {},
                {
                  get: () => {
                    throw new Error("trap")
                  },
                  getPrototypeOf: () => {
                    throw new Error("trap")
                  },
                },
              )
            case "dies":
              return applySearchClick(event).pipe(
                Effect.andThen(
                  Effect.die(new Error(`died at ${import.meta.filename}:42:7\n    at handler (${import.meta.filename}:42:7)`)),
                ),
              )
            default:
              return applySearchClick(event)
          }
        }
        const consumer = yield* startProjection(s.db.url, { ...s, handler, maxRetries: 1, shutdownGrace: "1 second" })
        const stats = yield* waitForStats(consumer, (st) => st.deadLettered === bad.length && st.processed === 5, 30_000)
        const letters = letterHeaders(yield* readRaw(s.deadLetterTopic, bad.length))
        expect(stats).toMatchObject({ processed: 5, deadLettered: bad.length, handlerFailures: bad.length * 2 })

        for (const key of bad) {
          expect(letters[key]?.["dlq.reason"], key).toBe("handler_failed")
          expect(letters[key]?.["dlq.attempts"], key).toBe("2")
          expect(letters[key]?.["dlq.error"], key).not.toContain(import.meta.filename)
        }
        expect(letters["returns-promise"]?.["dlq.error"]).toContain("returned a Promise, not an Effect")
        expect(letters.throws?.["dlq.error"]).toBe("handler threw outside any Effect")
        expect(letters.dies?.["dlq.error"]).toContain("<path>")
        // Every attempt was rolled back (the "dies" handler had written) and no session kept its transaction.
        expect(yield* readClickCounts(s.db.url)).toEqual({ socks: 5 })
        expect(yield* inboxKeys(s.db.url, s.groupId)).toEqual(Array.from({ length: 5 }, (_, i) => `good-${i}`))
        expect(yield* sessionsInTransaction(s.db.url, s.db.name)).toBe(0)
        // Stop ends: nothing is left running that it waits for.
        yield* consumer.stop.pipe(Effect.timeoutOrElse({ duration: "20 seconds", orElse: () => Effect.die(new Error("stop did not end")) }))
      }),
    90_000,
  )

  it.live(
    "a handler that runs COMMIT or ROLLBACK itself is detected before our COMMIT and dead-lettered at once as handler_failed, never counted as processed (N6)",
    () =>
      Effect.gen(function* () {
        const s = yield* scenario
        const bad = ["commits", "rolls-back"]
        const sent = badThenGood(bad)
        yield* publishClicks(s.topic, sent)
        const handler = (event: ConsumedEvent<SearchClick>) =>
          Effect.gen(function* () {
            const sql = yield* SqlClient.SqlClient
            yield* applySearchClick(event)
            if (event.dedupKey === "commits") yield* sql.unsafe("COMMIT")
            if (event.dedupKey === "rolls-back") yield* sql.unsafe("ROLLBACK")
          })
        const consumer = yield* startProjection(s.db.url, { ...s, handler, maxRetries: 3 })
        const stats = yield* waitForStats(consumer, (st) => st.deadLettered === bad.length && st.processed === 5, 30_000)
        expect(stats).toMatchObject({ processed: 5, duplicates: 0, deadLettered: 2 })

        const letters = letterHeaders(yield* readRaw(s.deadLetterTopic, bad.length))
        for (const key of bad) {
          expect(letters[key]?.["dlq.reason"], key).toBe("handler_failed")
          // Not retried: a retry would meet the committed key (a false duplicate) or roll back again.
          expect(letters[key]?.["dlq.attempts"], key).toBe("1")
          expect(letters[key]?.["dlq.error"], key).toContain("ended the inbox transaction itself")
        }
        // What the handler committed itself stays committed (the inbox cannot take it back); the ROLLBACK took its click with it.
        expect(yield* readClickCounts(s.db.url)).toEqual(expectedCounts(["tent", ...Array.from({ length: 5 }, () => "socks")]))
        expect(yield* sessionsInTransaction(s.db.url, s.db.name)).toBe(0)
      }),
    60_000,
  )

  it.live(
    "a hung handler shows on the in-flight gauge and in a WARN, is cut off by handlerTimeout (its query cancelled), retried, then dead-lettered; the partition moves on",
    () =>
      Effect.gen(function* () {
        const s = yield* scenario
        const sent = badThenGood(["hangs"])
        yield* publishClicks(s.topic, sent)
        const handler = (event: ConsumedEvent<SearchClick>) =>
          Effect.gen(function* () {
            const sql = yield* SqlClient.SqlClient
            if (event.dedupKey === "hangs") yield* sql`SELECT pg_sleep(3600)`
            yield* applySearchClick(event)
          })
        const logs = makeLogCapture()
        const consumer = yield* startProjection(s.db.url, {
          ...s,
          handler,
          maxRetries: 1,
          handlerTimeout: "2500 millis",
          slowMessageWarning: "1 second",
        }).pipe(Effect.provide(logs.layer))

        // While it hangs: the gauge shows its age and the log says which message it is.
        const warned = yield* waitUntil(
          "the slow-message WARN",
          Effect.sync(() => logs.lines.find((l) => l.includes("longer than slowMessageWarning"))),
          20_000,
        )
        expect(warned).toMatch(/^Warn/)
        expect(warned).toContain('"offset":"0"')
        const partition = JSON.parse(warned.slice(warned.indexOf("{"))).partition as number
        const gauge = Metric.withAttributes(consumerOldestInFlight, {
          consumer_group: s.groupId,
          topic: s.topic,
          partition: String(partition),
        })
        expect((yield* Metric.value(gauge)).value).toBeGreaterThanOrEqual(1)

        const stats = yield* waitForStats(consumer, (st) => st.deadLettered === 1 && st.processed === 5, 30_000)
        expect(stats).toMatchObject({ processed: 5, deadLettered: 1, handlerTimeouts: 2, handlerFailures: 2 })
        const [letter] = yield* readRaw(s.deadLetterTopic, 1)
        expect(letter?.headers["dlq.error"]?.toString()).toContain("ran past handlerTimeout")
        // The hung query was cancelled, not left running on the server.
        const sleeping = yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          return yield* sql<{
            n: number
          }>`SELECT count(*)::int AS n FROM pg_stat_activity WHERE query LIKE '%pg_sleep(3600)%' AND pid <> pg_backend_pid()`
        }).pipe(Effect.provide(sqlLayer(s.db.url)), Effect.orDie)
        expect(sleeping[0]?.n).toBe(0)
        yield* waitUntil("the gauge back at 0", Metric.value(gauge).pipe(Effect.map((g) => (g.value === 0 ? true : undefined))), 10_000)
        expect(yield* readClickCounts(s.db.url)).toEqual({ socks: 5 })
      }),
    60_000,
  )
})
