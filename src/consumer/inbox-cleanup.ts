/**
 * Inbox keys are only needed while a message can still come again (redelivery after a
 * crash or a rebalance, a replay, a reset of the group's offsets). A key is deleted once
 * it is older than the retention *and* the offset of its delivery is committed in Kafka:
 * a message not yet committed is redelivered after a crash however old it is, and without
 * its key it would be applied twice. Deleted in small batches, so the cleanup never holds
 * many locks or one long transaction.
 */
import { Duration, Effect, Schedule } from "effect"
import type { SqlClient } from "effect/sql"
import type { StatsRecorder } from "./consumer-stats.ts"
import type { ConsumerKafkaError } from "./errors.ts"
import { type CommittedOffset, deleteExpiredKeys } from "./inbox-table.ts"

export interface InboxCleanupOptions {
  readonly consumerGroup: string
  readonly retention: Duration.Duration
  readonly interval: Duration.Duration
  readonly batchSize: number
  readonly stats: StatsRecorder
  /** The group's committed offsets, read from Kafka (the source of truth) at each round. */
  readonly committedOffsets: Effect.Effect<ReadonlyArray<CommittedOffset>, ConsumerKafkaError>
}

/** Deletes expired, committed keys batch by batch until none are left; returns how many. */
export const deleteExpiredInboxKeys = Effect.fn("IdempotentConsumer.deleteExpiredInboxKeys")(function* (o: InboxCleanupOptions) {
  const retentionSeconds = Duration.toSeconds(o.retention)
  const committed = yield* o.committedOffsets
  let total = 0
  for (;;) {
    const deleted = yield* deleteExpiredKeys(o.consumerGroup, retentionSeconds, o.batchSize, committed)
    total += deleted
    yield* o.stats.record("inboxExpired", deleted)
    if (deleted < o.batchSize) return total
  }
})

/** Runs the cleanup every interval for as long as the consumer runs; a failed round is logged and the next one tries again. */
export const inboxCleanupLoop = (o: InboxCleanupOptions): Effect.Effect<never, never, SqlClient.SqlClient> =>
  deleteExpiredInboxKeys(o).pipe(
    Effect.tap((n) => (n > 0 ? Effect.logInfo("expired inbox keys deleted").pipe(Effect.annotateLogs({ count: n })) : Effect.void)),
    Effect.catch((error) =>
      Effect.logWarning("inbox cleanup failed; retrying next interval").pipe(Effect.annotateLogs({ error: error.message })),
    ),
    Effect.repeat(Schedule.spaced(o.interval)),
    Effect.andThen(Effect.never),
  )
