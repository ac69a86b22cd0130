/** What is waiting in the outbox, for the backlog gauges: one cheap query on the pending rows. */
import { Context, Effect, Layer } from "effect"
import { SqlClient } from "effect/sql"
import type { DatabaseError } from "../domain/errors.ts"
import { toDatabaseError } from "./sql-error.ts"

export interface Backlog {
  readonly newCount: number
  readonly failedCount: number
  /** Age of the oldest due row (NEW, or FAILED whose retry time has come), 0 when none is due. */
  readonly lagSeconds: number
}

export class OutboxBacklog extends Context.Service<OutboxBacklog, { readonly read: Effect.Effect<Backlog, DatabaseError> }>()(
  "outbox-relay/OutboxBacklog",
) {
  static readonly layer = Layer.effect(
    OutboxBacklog,
    Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      // The WHERE matches the partial index outbox_event_pending_idx, so SENT history
      // (however large) is never read; the cost grows with the backlog only. No parallel
      // workers: a count over a million-row backlog would otherwise take three processes'
      // CPU at once from the claims it is meant to watch.
      const count = sql<{ new_count: number; failed_count: number; lag_seconds: number }>`
        SELECT count(*) FILTER (WHERE status = 'NEW')::int AS new_count,
               count(*) FILTER (WHERE status = 'FAILED')::int AS failed_count,
               coalesce(extract(epoch FROM now() - min(created_at) FILTER (WHERE next_attempt_at <= now())), 0)::float8 AS lag_seconds
          FROM outbox_event
         WHERE status IN ('NEW', 'FAILED')`
      const read = sql.withTransaction(sql`SET LOCAL max_parallel_workers_per_gather = 0`.pipe(Effect.andThen(count))).pipe(
        Effect.map(([row]) => ({
          newCount: row?.new_count ?? 0,
          failedCount: row?.failed_count ?? 0,
          lagSeconds: Math.max(0, row?.lag_seconds ?? 0),
        })),
        Effect.mapError(toDatabaseError("read backlog")),
      )
      return OutboxBacklog.of({ read })
    }),
  )
}
