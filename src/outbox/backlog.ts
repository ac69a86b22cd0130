/**
 * What is waiting in the outbox, for the backlog gauges and readiness: one query over the
 * pending rows. The last read is kept, so /readyz can say what waits without a query per probe.
 */
import { Context, Effect, Layer, Ref } from "effect"
import { SqlClient } from "effect/sql"
import { RelayConfig } from "../config/config.ts"
import type { DatabaseError } from "../domain/errors.ts"
import { toDatabaseError } from "./sql-error.ts"
import { stuckBounds, stuckConditions } from "./stuck-rows.ts"

export interface Backlog {
  readonly newCount: number
  readonly failedCount: number
  /** Age of the oldest due row (NEW, or FAILED whose retry time has come), 0 when none is due. */
  readonly lagSeconds: number
  /** Age of the oldest pending row, due or not (the oldest head of any key), 0 when none. */
  readonly oldestPendingSeconds: number
  /** Keys (and unkeyed rows) whose oldest pending row is older than KEY_STALL_MS. */
  readonly stalledKeys: number
  /** Rows due to die whose dead letter waits for the dead-letter topic (FAILED with a dead_reason). */
  readonly deadLetterWaiting: number
  /** Pending rows leased or scheduled beyond what the relay's settings write. */
  readonly stuckRows: number
}

export class OutboxBacklog extends Context.Service<
  OutboxBacklog,
  {
    /** Reads the table and keeps the result as `latest`. */
    readonly read: Effect.Effect<Backlog, DatabaseError>
    /** The last successful read, undefined before the first. */
    readonly latest: Effect.Effect<Backlog | undefined>
  }
>()("outbox-relay/OutboxBacklog") {
  static readonly layer = Layer.effect(
    OutboxBacklog,
    Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      const c = stuckConditions(sql, stuckBounds(yield* RelayConfig))
      const latest = yield* Ref.make<Backlog | undefined>(undefined)
      // The WHERE matches the partial index outbox_event_pending_idx, so SENT history
      // (however large) is never read; the cost grows with the backlog only. No parallel
      // workers: a count over a million-row backlog would otherwise take three processes'
      // CPU at once from the claims it is meant to watch. Stalled keys are counted in a
      // subquery that hashes the keys of rows older than KEY_STALL_MS (usually none): with 100k
      // such rows over 1,000 keys it took ~45–150 ms where count(DISTINCT …) sorted for ~300 ms.
      const count = sql<{
        new_count: number
        failed_count: number
        lag_seconds: number
        oldest_pending_seconds: number
        stalled_keys: number
        dead_letter_waiting: number
        stuck_rows: number
      }>`
        SELECT count(*) FILTER (WHERE status = 'NEW')::int AS new_count,
               count(*) FILTER (WHERE status = 'FAILED')::int AS failed_count,
               coalesce(extract(epoch FROM now() - min(created_at) FILTER (WHERE next_attempt_at <= now())), 0)::float8 AS lag_seconds,
               coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest_pending_seconds,
               ((SELECT count(*) FROM (SELECT DISTINCT aggregate_key FROM outbox_event
                                         WHERE status IN ('NEW', 'FAILED') AND aggregate_key IS NOT NULL AND ${c.stalled}) k)
                 + count(*) FILTER (WHERE aggregate_key IS NULL AND ${c.stalled}))::int AS stalled_keys,
               count(*) FILTER (WHERE ${c.waitingForDeadLetterTopic})::int AS dead_letter_waiting,
               count(*) FILTER (WHERE ${c.impossible})::int AS stuck_rows
          FROM outbox_event
         WHERE status IN ('NEW', 'FAILED')`
      const read = sql.withTransaction(sql`SET LOCAL max_parallel_workers_per_gather = 0`.pipe(Effect.andThen(count))).pipe(
        Effect.map(
          ([row]): Backlog => ({
            newCount: row?.new_count ?? 0,
            failedCount: row?.failed_count ?? 0,
            lagSeconds: Math.max(0, row?.lag_seconds ?? 0),
            oldestPendingSeconds: Math.max(0, row?.oldest_pending_seconds ?? 0),
            stalledKeys: row?.stalled_keys ?? 0,
            deadLetterWaiting: row?.dead_letter_waiting ?? 0,
            stuckRows: row?.stuck_rows ?? 0,
          }),
        ),
        Effect.tap((b) => Ref.set(latest, b)),
        Effect.mapError(toDatabaseError("read backlog")),
      )
      return OutboxBacklog.of({ read, latest: Ref.get(latest) })
    }),
  )
}
