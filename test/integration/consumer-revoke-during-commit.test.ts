/**
 * A rebalance that revokes a batch while its message's COMMIT is on the wire. The COMMIT
 * cannot be interrupted, so the transaction commits and the event is applied; the batch is
 * abandoned uncommitted and the next owner gets the message again as a duplicate. The
 * counts must say so: one processed, then duplicates, never "processed 0, duplicate 1" for an
 * event that was applied (the full-suite flake "expected 179 to be 180" in consumer.test.ts).
 *
 * Deterministic: a deferred constraint trigger makes every COMMIT of the inbox sleep, the
 * test waits until PostgreSQL shows that COMMIT running, then ends the membership term as
 * kafkajs' REBALANCING event does. kafkajs itself is faked (the batch payload); the
 * transaction, the inbox and the projection are real.
 */
import { randomBytes, randomUUID } from "node:crypto"
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Fiber, Layer } from "effect"
import { SqlClient } from "effect/sql"
import type { EachBatchPayload, KafkaMessage } from "kafkajs"
import { applySearchClick, SearchClick } from "../../examples/search-clicks-projection/projection.ts"
import { makeStatsRecorder } from "../../src/consumer/consumer-stats.ts"
import { makeGroupMembership } from "../../src/consumer/group-membership.ts"
import { processPartitionBatch } from "../../src/consumer/partition-batch.ts"
import { processMessage } from "../../src/consumer/process-message.ts"
import { inboxKeys, projectionDatabase, readClickCounts, waitUntil } from "../support/consumer-harness.ts"
import { sqlLayer } from "../support/test-database.ts"

// Fires at COMMIT (deferred), for a new key (INSERT) and for a duplicate (the upsert's UPDATE).
const SLOW_COMMIT_DDL = [
  `CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.5); RETURN NULL; END $$`,
  `CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT OR UPDATE ON consumer_inbox
     DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit()`,
]

// The inbox COMMIT is running on the server (sleeping in the deferred trigger).
const commitInFlight = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  const rows = yield* sql<{ n: number }>`
    SELECT count(*)::int AS n FROM pg_stat_activity
     WHERE datname = current_database() AND state = 'active' AND query = 'COMMIT' AND wait_event = 'PgSleep'`
  return (rows[0]?.n ?? 0) > 0 ? true : undefined
}).pipe(Effect.orDie)

interface FakeBatch {
  readonly payload: EachBatchPayload
  readonly resolved: Array<string>
  readonly committed: Array<string>
}

/** kafkajs' eachBatch payload for one message, recording what the batch resolves and commits. */
const fakeBatch = (topic: string, message: KafkaMessage): FakeBatch => {
  const resolved: Array<string> = []
  const committed: Array<string> = []
  const payload: EachBatchPayload = {
    batch: {
      topic,
      partition: 0,
      highWatermark: String(Number(message.offset) + 1),
      messages: [message],
      isEmpty: () => false,
      firstOffset: () => message.offset,
      lastOffset: () => message.offset,
      offsetLag: () => "0",
      offsetLagLow: () => "0",
    },
    resolveOffset: (offset) => {
      resolved.push(offset)
    },
    heartbeat: async () => undefined,
    pause: () => () => undefined,
    commitOffsetsIfNecessary: async (offsets) => {
      for (const t of offsets?.topics ?? []) for (const p of t.partitions) committed.push(p.offset)
    },
    uncommittedOffsets: () => ({ topics: [] }),
    isRunning: () => true,
    isStale: () => false,
  }
  return { payload, resolved, committed }
}

describe("idempotent consumer: a revoke while the COMMIT is in flight", () => {
  it.live(
    "counts the applied event as processed once and its redeliveries as duplicates; commits no offset for the abandoned batch",
    () =>
      Effect.gen(function* () {
        const db = yield* projectionDatabase
        const sql = yield* Layer.build(sqlLayer(db.url)).pipe(Effect.orDie)
        yield* Effect.gen(function* () {
          const client = yield* SqlClient.SqlClient
          for (const statement of SLOW_COMMIT_DDL) yield* client.unsafe(statement)
        }).pipe(Effect.provideContext(sql), Effect.orDie)

        const run = randomBytes(4).toString("hex")
        const groupId = `revoke-commit-${run}`
        const topic = `test-${run}-clicks`
        const stats = yield* makeStatsRecorder(groupId)
        const processBatch = processPartitionBatch<SqlClient.SqlClient>({
          processMessage: processMessage({
            consumerGroup: groupId,
            handler: applySearchClick,
            payloadSchema: SearchClick,
            dedupKeyOf: (m) => m.headers.dedup_key,
            maxRetries: 0,
            retryBackoff: { baseMs: 10, maxMs: 10 },
            outageBackoff: { baseMs: 10, maxMs: 10 },
            stats,
            deadLetter: () => Effect.die(new Error("nothing is dead-lettered here")),
            handlerTimeout: undefined,
            headerBounds: { maxHeaders: 100, maxHeaderBytes: 65_536 },
          }),
          afterMessage: () => Effect.void,
          isStopping: () => false,
          commitInterval: Duration.hours(1),
          consumerGroup: groupId,
          slowMessageWarning: Duration.seconds(30),
        })
        const message: KafkaMessage = {
          key: Buffer.from("session-1"),
          value: Buffer.from(JSON.stringify({ query: "tent", resultId: "r-1", position: 1 })),
          timestamp: String(Date.now()),
          attributes: 0,
          offset: "7",
          headers: { dedup_key: `click-${run}`, event_id: randomUUID(), event_type: "search_click" },
        }
        const membership = makeGroupMembership()

        // A batch whose term ends (a rebalance) while its message's COMMIT runs: abandoned, nothing resolved or committed.
        const revokedDuringCommit = Effect.gen(function* () {
          const batch = fakeBatch(topic, message)
          const fiber = yield* processBatch(batch.payload, membership.currentTerm()).pipe(Effect.provideContext(sql), Effect.forkChild)
          yield* waitUntil("the inbox COMMIT in flight", commitInFlight.pipe(Effect.provideContext(sql)), 20_000)
          membership.endTerm()
          yield* Fiber.join(fiber)
          expect(batch.resolved).toEqual([])
          expect(batch.committed).toEqual([])
        })

        // The first delivery: the COMMIT applies the click although the batch is revoked.
        yield* revokedDuringCommit
        expect(yield* inboxKeys(db.url, groupId)).toEqual([`click-${run}`])
        expect(yield* readClickCounts(db.url)).toEqual({ tent: 1 })
        expect(yield* stats.snapshot).toMatchObject({ processed: 1, duplicates: 0 })

        // The next owner's delivery is skipped (its upsert commits too), and is revoked the same way.
        yield* revokedDuringCommit
        expect(yield* stats.snapshot).toMatchObject({ processed: 1, duplicates: 1 })

        // A delivery that is not revoked: skipped, resolved and committed.
        const last = fakeBatch(topic, message)
        yield* processBatch(last.payload, membership.currentTerm()).pipe(Effect.provideContext(sql))
        expect(last.resolved).toEqual(["7"])
        expect(last.committed).toEqual(["8"])
        expect(yield* stats.snapshot).toMatchObject({ processed: 1, duplicates: 2, handlerFailures: 0, deadLettered: 0 })
        expect(yield* readClickCounts(db.url)).toEqual({ tent: 1 })
      }),
    60_000,
  )
})
