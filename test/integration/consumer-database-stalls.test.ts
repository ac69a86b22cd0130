/**
 * The inbox database misbehaving under a running consumer (issue 20, N1, N4, N7), against
 * the real Kafka and PostgreSQL: a member starting while a handler holds a long transaction,
 * the database turning read-only (a demoted primary after a failover), and a frozen member's
 * transaction holding a key's row lock. Each test reads its outcome back from PostgreSQL
 * (projection, inbox) and the consumer's counts.
 */
import { randomBytes } from "node:crypto"
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Layer } from "effect"
import { SqlClient } from "effect/sql"
import { applySearchClick, type SearchClick } from "../../examples/search-clicks-projection/projection.ts"
import { type ConsumedEvent, ensureInboxTable } from "../../src/consumer.ts"
import {
  committedOffsets,
  createTopics,
  expectedCounts,
  inboxKeys,
  makeLogCapture,
  projectionDatabase,
  publishClicks,
  readClickCounts,
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
  return { run, topic, deadLetterTopic, groupId: `stalls-${run}`, db }
})

/** Runs statements as the operator would, from the server's maintenance database. */
const asOperator = (url: string, f: (sql: SqlClient.SqlClient) => Effect.Effect<unknown, unknown>) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    yield* f(sql)
  }).pipe(Effect.provide(sqlLayer(url.replace(/\/[^/]+$/, "/postgres"))), Effect.orDie)

/** Ends every client session on the database: the pools reconnect, with the database's settings as they are now. */
const endSessions = (sql: SqlClient.SqlClient, database: string) =>
  sql`SELECT pg_terminate_backend(pid) FROM pg_stat_activity
       WHERE datname = ${database} AND pid <> pg_backend_pid() AND backend_type = 'client backend'`

const clicks = (prefix: string, n: number): ReadonlyArray<TestClick> =>
  Array.from({ length: n }, (_, i) => ({ dedupKey: `${prefix}-${i}`, query: ["tent", "socks"][i % 2]!, aggregateKey: `${prefix}-s${i}` }))

describe("idempotent consumer when the inbox database stalls", () => {
  it.live(
    "a member starting while a handler holds its transaction takes no lock: the other partitions keep flowing (N1)",
    () =>
      Effect.gen(function* () {
        const s = yield* scenario
        const longStarted = yield* Deferred.make<ConsumedEvent<SearchClick>>()
        const release = yield* Deferred.make<void>()
        // The handler holds its inbox transaction open (the inbox row inserted, so a ROW
        // EXCLUSIVE lock on consumer_inbox) until the test releases it: a 40 s handler.
        const handler = (event: ConsumedEvent<SearchClick>) =>
          event.dedupKey === "long"
            ? Deferred.succeed(longStarted, event).pipe(Effect.andThen(Deferred.await(release)), Effect.andThen(applySearchClick(event)))
            : applySearchClick(event)
        yield* publishClicks(s.topic, [{ dedupKey: "long", query: "tent", aggregateKey: "long-session" }])
        const consumer = yield* startProjection(s.db.url, { ...s, handler })
        const long = yield* Deferred.await(longStarted)

        // Another member starts, as the guide says: ensureInboxTable, then its consumer (another
        // group on the same inbox database, so its start does not revoke the long transaction).
        const otherTopic = `${s.topic}-other`
        yield* createTopics([otherTopic])
        const starting = yield* Effect.gen(function* () {
          yield* ensureInboxTable.pipe(Effect.provide(sqlLayer(s.db.url)), Effect.orDie)
          return yield* startProjection(s.db.url, { ...s, groupId: `${s.groupId}-other`, topic: otherTopic })
        }).pipe(Effect.forkChild)

        // While it starts and the long transaction stays open, clicks on the other partitions are applied.
        const others = clicks("other", 40)
        yield* publishClicks(s.topic, others)
        yield* publishClicks(otherTopic, clicks("second-group", 10))
        // Clicks behind the long one on its partition must wait; all others must flow.
        const ends = yield* committedOffsets(s.groupId, s.topic)
        const onOtherPartitions = Object.entries(ends.end)
          .filter(([p]) => Number(p) !== long.partition)
          .reduce((n, [, end]) => n + end, 0)
        expect(onOtherPartitions).toBeGreaterThan(0)
        const flowing = yield* waitForStats(consumer, (st) => st.processed === onOtherPartitions, 20_000)
        expect(flowing.processed).toBe(onOtherPartitions)
        const second = yield* Fiber.join(starting)
        yield* waitForStats(second, (st) => st.processed === 10, 20_000)
        expect(yield* Deferred.isDone(release)).toBe(false)
        // Nothing waits on a lock of the inbox table while the long transaction is open.
        const waiting = yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          return yield* sql<{ n: number }>`
            SELECT count(*)::int AS n FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
             WHERE NOT l.granted AND c.relname LIKE 'consumer_inbox%'`
        }).pipe(Effect.provide(sqlLayer(s.db.url)), Effect.orDie)
        expect(waiting[0]?.n).toBe(0)

        yield* Deferred.succeed(release, undefined)
        yield* waitForStats(consumer, (st) => st.processed === others.length + 1, 30_000)
        expect(yield* readClickCounts(s.db.url)).toEqual(
          expectedCounts(["tent", ...others.map((c) => c.query), ...clicks("second-group", 10).map((c) => c.query)]),
        )
      }),
    90_000,
  )

  it.live(
    "a database that turns read-only (SQLSTATE 25006, a demoted primary after a failover) is waited out: nothing is dead-lettered, every click is applied once (N4)",
    () =>
      Effect.gen(function* () {
        const s = yield* scenario
        const logs = makeLogCapture()
        const before = clicks("before", 20)
        yield* publishClicks(s.topic, before)
        const consumer = yield* startProjection(s.db.url, { ...s, outageBackoff: { baseMs: 50, maxMs: 300 } }).pipe(
          Effect.provide(logs.layer),
        )
        yield* waitForStats(consumer, (st) => st.processed === before.length, 30_000)

        // The failover: every new session is read-only, and the pool's sessions end, so it reconnects into that.
        yield* asOperator(s.db.url, (sql) =>
          sql
            .unsafe(`ALTER DATABASE ${s.db.name} SET default_transaction_read_only = on`)
            .pipe(Effect.andThen(endSessions(sql, s.db.name))),
        )
        const during = clicks("during", 30)
        yield* publishClicks(s.topic, during)
        // Read-only for longer than the whole retry budget (maxRetries 2 with 20–100 ms backoff).
        yield* waitUntil(
          "the consumer meeting SQLSTATE 25006 again and again",
          Effect.sync(() => (logs.lines.filter((l) => l.includes("25006")).length >= 6 ? true : undefined)),
          30_000,
        )
        expect((yield* consumer.handle.stats).deadLettered).toBe(0)

        // Promoted back: writable sessions again.
        yield* asOperator(s.db.url, (sql) =>
          sql.unsafe(`ALTER DATABASE ${s.db.name} RESET default_transaction_read_only`).pipe(Effect.andThen(endSessions(sql, s.db.name))),
        )
        const stats = yield* waitForStats(consumer, (st) => st.processed + st.duplicates >= before.length + during.length, 60_000)
        expect(stats).toMatchObject({ deadLettered: 0, handlerFailures: 0 })
        expect(stats.databaseOutages).toBeGreaterThan(0)
        expect(logs.lines.some((l) => l.includes("inbox database unavailable") && l.includes("25006"))).toBe(true)
        expect(yield* readClickCounts(s.db.url)).toEqual(expectedCounts([...before, ...during].map((c) => c.query)))
        expect(yield* inboxKeys(s.db.url, s.groupId)).toHaveLength(before.length + during.length)
      }),
    90_000,
  )

  it.live(
    "a frozen member's open transaction is ended by the server (idle_in_transaction_session_timeout, as the guide recommends) and the member that gets its key proceeds (N7)",
    () =>
      Effect.gen(function* () {
        const s = yield* scenario
        // The guide's settings for the consumer's role, here for the test database's sessions.
        yield* asOperator(s.db.url, (sql) =>
          Effect.all([
            sql.unsafe(`ALTER DATABASE ${s.db.name} SET idle_in_transaction_session_timeout = '2s'`),
            sql.unsafe(`ALTER DATABASE ${s.db.name} SET lock_timeout = '500ms'`),
          ]),
        )
        // A member froze (SIGSTOP, a paused VM) inside its inbox transaction for key "frozen":
        // to the server, a session idle in transaction holding the key's row lock.
        const frozenPool = yield* Layer.build(sqlLayer(s.db.url)).pipe(Effect.orDie)
        const holding = yield* Deferred.make<void>()
        const frozen = yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          yield* sql.withTransaction(
            Effect.gen(function* () {
              yield* sql`INSERT INTO consumer_inbox (consumer_group, dedup_key, topic, kafka_partition, kafka_offset)
                         VALUES (${s.groupId}, 'frozen', ${s.topic}, 0, 999999)`
              yield* Deferred.succeed(holding, undefined)
              yield* Effect.never
            }),
          )
        }).pipe(Effect.provideContext(frozenPool), Effect.exit, Effect.forkChild)
        yield* Deferred.await(holding)

        // The message comes again (the frozen member's partition was reassigned) to a live member.
        yield* publishClicks(s.topic, [{ dedupKey: "frozen", query: "stove", aggregateKey: "frozen-session" }])
        const logs = makeLogCapture()
        const consumer = yield* startProjection(s.db.url, { ...s, outageBackoff: { baseMs: 100, maxMs: 500 } }).pipe(
          Effect.provide(logs.layer),
        )
        // The server ends the frozen session after 2 s idle in transaction; its row lock goes with it.
        const stats = yield* waitForStats(consumer, (st) => st.processed === 1, 30_000)
        expect(stats).toMatchObject({ processed: 1, deadLettered: 0, handlerFailures: 0 })
        // Meanwhile the live member's insert gave up on the lock after lock_timeout (55P03) and waited in place, logged.
        expect(logs.lines.some((l) => l.includes("55P03"))).toBe(true)
        expect(yield* readClickCounts(s.db.url)).toEqual({ stove: 1 })
        expect(yield* inboxKeys(s.db.url, s.groupId)).toEqual(["frozen"])
        // The key is the live member's delivery, not the frozen member's uncommitted row.
        const [row] = yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          return yield* sql<{ offset: string }>`SELECT kafka_offset::text AS offset FROM consumer_inbox WHERE dedup_key = 'frozen'`
        }).pipe(Effect.provide(sqlLayer(s.db.url)), Effect.orDie)
        expect(row?.offset).not.toBe("999999")
        yield* Fiber.interrupt(frozen)
      }),
    60_000,
  )
})
