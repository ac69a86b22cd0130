/**
 * The inbox: one row per (consumer group, dedup_key) whose handler transaction committed.
 * It lives in the consumer's own database, next to the data the handler changes, so the
 * row and the change commit together: that is what makes a redelivery detectable.
 */
import { Effect } from "effect"
import { SqlClient, type SqlError } from "effect/sql"

/**
 * Each object the consumer needs, with the DDL that creates it. Idempotent. Users who apply
 * schema with their own migration tool run `INBOX_TABLE_DDL` in order.
 */
const INBOX_OBJECTS: ReadonlyArray<{ readonly name: string; readonly ddl: string }> = [
  {
    name: "consumer_inbox",
    ddl: `CREATE TABLE IF NOT EXISTS consumer_inbox (
    consumer_group  text        NOT NULL,
    dedup_key       text        NOT NULL,
    event_id        text,
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    processed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, dedup_key)
  )`,
  },
  // The cleanup walks each group's oldest keys; without this it would scan the table.
  {
    name: "consumer_inbox_expiry_idx",
    ddl: `CREATE INDEX IF NOT EXISTS consumer_inbox_expiry_idx ON consumer_inbox (consumer_group, processed_at)`,
  },
  // The last resort of a dead letter the dead-letter topic refuses even trimmed: its position
  // (the message is still on its topic until the topic's retention), its bytes, and why.
  {
    name: "consumer_dead_letter",
    ddl: `CREATE TABLE IF NOT EXISTS consumer_dead_letter (
    consumer_group  text        NOT NULL,
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    dedup_key       text,
    reason          text        NOT NULL,
    error           text        NOT NULL,
    attempts        integer     NOT NULL,
    message_key     bytea,
    message_value   bytea,
    dlq_error       text        NOT NULL,
    failed_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, kafka_partition, kafka_offset)
  )`,
  },
]

/** The DDL, for users who apply schema with their own migration tool. Idempotent. */
export const INBOX_TABLE_DDL: ReadonlyArray<string> = INBOX_OBJECTS.map((o) => o.ddl)

/** The consumer's tables and index that the database does not have yet. */
export const missingInboxObjects: Effect.Effect<ReadonlyArray<string>, SqlError.SqlError, SqlClient.SqlClient> = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  const missing: Array<string> = []
  for (const { name } of INBOX_OBJECTS) {
    const [row] = yield* sql<{ present: boolean }>`SELECT to_regclass(${name}) IS NOT NULL AS present`
    if (row?.present !== true) missing.push(name)
  }
  return missing
})

/**
 * Creates what is missing of the inbox tables and index (safe to run on every start).
 *
 * Start-up never takes a lock that live traffic needs: the catalog is read first (no lock
 * on the table), and nothing is run when everything exists. `CREATE INDEX IF NOT EXISTS`
 * queues for a SHARE lock on the table even when the index exists, and while it queues
 * behind one long handler transaction, every inbox INSERT of every member queues behind
 * it. When something is missing, the DDL runs with a 2 s `lock_timeout`: under live
 * traffic it fails (SQLSTATE 55P03) instead of stalling the group; apply INBOX_TABLE_DDL
 * through your migrations then.
 */
export const ensureInboxTable: Effect.Effect<void, SqlError.SqlError, SqlClient.SqlClient> = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  const missing = new Set(yield* missingInboxObjects)
  if (missing.size === 0) return
  for (const { name, ddl } of INBOX_OBJECTS) {
    if (!missing.has(name)) continue
    yield* sql.withTransaction(
      Effect.gen(function* () {
        yield* sql.unsafe(`SET LOCAL lock_timeout = '2s'`)
        yield* sql.unsafe(ddl)
      }),
    )
  }
})

/** Whether the consumer can start: its tables are there (no DDL, no lock taken). */
export const inboxTableExists: Effect.Effect<boolean, SqlError.SqlError, SqlClient.SqlClient> = missingInboxObjects.pipe(
  Effect.map((missing) => !missing.includes("consumer_inbox") && !missing.includes("consumer_dead_letter")),
)

export interface InboxEntry {
  readonly consumerGroup: string
  readonly dedupKey: string
  readonly eventId: string | null
  readonly topic: string
  readonly partition: number
  readonly offset: string
}

/**
 * Records the key inside the caller's transaction. Not inserted: the key was there already, so
 * this message's effects were committed before (a redelivery) and the handler must not
 * run. A concurrent transaction inserting the same key makes this one wait for its
 * outcome, so two consumers can never both apply one event.
 *
 * A duplicate moves the row to its own delivery (position and time): the cleanup keeps a
 * key until the offset of its latest delivery is committed, so a copy skipped but not yet
 * committed still finds the key when it is redelivered.
 */
export const recordInInbox = (
  entry: InboxEntry,
): Effect.Effect<{ readonly inserted: boolean; readonly txid: string | null }, SqlError.SqlError, SqlClient.SqlClient> =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    // txid: the transaction the row was written in, so the caller can tell whether it is still the one open.
    const rows = yield* sql<{ inserted: boolean; txid: string | null }>`
      INSERT INTO consumer_inbox (consumer_group, dedup_key, event_id, topic, kafka_partition, kafka_offset)
      VALUES (${entry.consumerGroup}, ${entry.dedupKey}, ${entry.eventId}, ${entry.topic}, ${entry.partition}, ${entry.offset}::bigint)
      ON CONFLICT (consumer_group, dedup_key) DO UPDATE
        SET topic = excluded.topic, kafka_partition = excluded.kafka_partition, kafka_offset = excluded.kafka_offset, processed_at = now()
      RETURNING (xmax = 0) AS inserted, txid_current_if_assigned()::text AS txid`
    return { inserted: rows[0]?.inserted === true, txid: rows[0]?.txid ?? null }
  })

/** Where a group's consumption of one partition is committed in Kafka: every offset below `next` is done. */
export interface CommittedOffset {
  readonly topic: string
  readonly partition: number
  readonly next: string
}

/**
 * Deletes up to `limit` of the group's keys older than the retention whose delivery is
 * below the group's committed offset; returns how many. A key whose offset is not committed
 * can still be redelivered (after a crash or a rebalance), so it stays whatever its age.
 * SKIP LOCKED: several instances of one group clean side by side without waiting.
 */
export const deleteExpiredKeys = (
  consumerGroup: string,
  retentionSeconds: number,
  limit: number,
  committed: ReadonlyArray<CommittedOffset>,
): Effect.Effect<number, SqlError.SqlError, SqlClient.SqlClient> =>
  Effect.gen(function* () {
    if (committed.length === 0) return 0
    const sql = yield* SqlClient.SqlClient
    const positions = JSON.stringify(committed.map((c) => ({ topic: c.topic, kafka_partition: c.partition, next_offset: c.next })))
    const [row] = yield* sql<{ deleted: number }>`
      WITH committed AS (
        SELECT * FROM jsonb_to_recordset(${positions}::jsonb) AS c(topic text, kafka_partition integer, next_offset bigint)
      ), expired AS (
        SELECT i.consumer_group, i.dedup_key FROM consumer_inbox i
          JOIN committed c ON c.topic = i.topic AND c.kafka_partition = i.kafka_partition
         WHERE i.consumer_group = ${consumerGroup}
           AND i.processed_at < now() - make_interval(secs => ${retentionSeconds})
           AND i.kafka_offset < c.next_offset
         ORDER BY i.processed_at
         LIMIT ${limit}
         FOR UPDATE OF i SKIP LOCKED
      ), gone AS (
        DELETE FROM consumer_inbox i USING expired e
         WHERE i.consumer_group = e.consumer_group AND i.dedup_key = e.dedup_key
        RETURNING 1
      )
      SELECT count(*)::int AS deleted FROM gone`
    return row?.deleted ?? 0
  })
