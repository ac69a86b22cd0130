/**
 * Listing dead letters and requeueing events (replay). Both the CLI and the admin API
 * use this service; a replay resets the retry state and writes an audit line in the
 * same transaction, so there is never a requeue without its record.
 */
import { Context, Effect, Layer } from "effect"
import { SqlClient } from "effect/sql"
import type { DatabaseError } from "../domain/errors.ts"
import { toDatabaseError } from "./sql-error.ts"

export interface EventSelection {
  readonly ids?: ReadonlyArray<string> | undefined
  readonly dedupKeys?: ReadonlyArray<string> | undefined
  readonly eventType?: string | undefined
  readonly reason?: string | undefined
  /** created_at bounds, ISO 8601. */
  readonly since?: string | undefined
  readonly until?: string | undefined
  readonly status?: "DEAD" | "FAILED" | undefined
  readonly limit?: number | undefined
}

export interface DeadLetterRow {
  readonly id: string
  readonly event_id: string
  readonly event_type: string
  readonly dedup_key: string
  readonly aggregate_key: string | null
  readonly status: string
  readonly dead_reason: string | null
  readonly attempts: number
  readonly last_error: string | null
  readonly created_at: string
  readonly request_id: string | null
  /** Where the event's trace continues: a replay writes its span there. */
  readonly traceparent: string | null
}

export interface ReplayResult {
  readonly dryRun: boolean
  readonly events: ReadonlyArray<DeadLetterRow>
  readonly auditId: string | null
}

const DEFAULT_LIST_LIMIT = 100
const MAX_REPLAY = 100_000

export class DeadLetterStore extends Context.Service<
  DeadLetterStore,
  {
    readonly list: (selection: EventSelection) => Effect.Effect<ReadonlyArray<DeadLetterRow>, DatabaseError>
    readonly replay: (
      selection: EventSelection,
      by: { readonly actor: string; readonly origin: "cli" | "admin-api"; readonly dryRun: boolean },
    ) => Effect.Effect<ReplayResult, DatabaseError>
  }
>()("outbox-relay/DeadLetterStore") {
  static readonly layer = Layer.effect(
    DeadLetterStore,
    Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient

      /** Every given filter narrows the selection; the status defaults to DEAD. */
      const where = (s: EventSelection) =>
        sql.and([
          sql`status = ${s.status ?? "DEAD"}`,
          ...(s.ids && s.ids.length > 0 ? [sql`id = ANY(${s.ids}::bigint[])`] : []),
          ...(s.dedupKeys && s.dedupKeys.length > 0 ? [sql`dedup_key = ANY(${s.dedupKeys}::text[])`] : []),
          ...(s.eventType ? [sql`event_type = ${s.eventType}`] : []),
          ...(s.reason ? [sql`dead_reason = ${s.reason}`] : []),
          ...(s.since ? [sql`created_at >= ${s.since}::timestamptz`] : []),
          ...(s.until ? [sql`created_at < ${s.until}::timestamptz`] : []),
        ])

      const select = (s: EventSelection, limit: number, lock: boolean) => sql<DeadLetterRow>`
        SELECT id::text, event_id::text, event_type, dedup_key, aggregate_key, status, dead_reason, attempts, last_error,
               to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS created_at,
               request_id, traceparent
          FROM outbox_event
         WHERE ${where(s)}
         ORDER BY id
         LIMIT ${limit}
         ${lock ? sql`FOR UPDATE` : sql``}`

      const list = (s: EventSelection) =>
        select(s, s.limit ?? DEFAULT_LIST_LIMIT, false).pipe(Effect.mapError(toDatabaseError("list dead letters")))

      const replay = (s: EventSelection, by: { actor: string; origin: "cli" | "admin-api"; dryRun: boolean }) =>
        sql
          .withTransaction(
            Effect.gen(function* () {
              const events = yield* select(s, s.limit ?? MAX_REPLAY, !by.dryRun)
              if (by.dryRun || events.length === 0) return { dryRun: by.dryRun, events, auditId: null }
              const ids = events.map((e) => e.id)
              // Back to NEW with a clean retry state; it is published on the next claim.
              yield* sql`
                UPDATE outbox_event
                   SET status = 'NEW', attempts = 0, next_attempt_at = now(), dead_reason = NULL,
                       last_error = NULL, locked_by = NULL, locked_until = NULL
                 WHERE id = ANY(${ids}::bigint[])`
              const [audit] = yield* sql<{ id: string }>`
                INSERT INTO outbox_replay_audit (actor, origin, selection, event_count, event_ids)
                VALUES (${by.actor}, ${by.origin}, ${JSON.stringify(s)}::jsonb, ${ids.length}, ${ids}::bigint[])
                RETURNING id::text AS id`
              return { dryRun: false, events, auditId: audit?.id ?? null }
            }),
          )
          .pipe(Effect.mapError(toDatabaseError("replay")))

      return DeadLetterStore.of({ list, replay })
    }),
  )
}
