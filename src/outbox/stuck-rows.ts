/**
 * Rows that wait without anyone seeing them: the oldest pending row of each key (what the
 * key's later events wait behind), and rows whose lease or retry time lies beyond anything
 * the relay's settings write. The relay writes `locked_until = now() + LEASE_MS` and
 * `next_attempt_at = now() + at most BACKOFF_MAX_MS`; a row past those (written by hand, by an
 * instance with other settings, or by a bug) is not claimed until that time and holds its key
 * meanwhile, so no retry can clear it. Freeing such rows is an operator's act, audited like a
 * replay. `replay` requeues DEAD or FAILED rows from scratch; freeing keeps a pending row's
 * state and only makes it claimable now.
 */
import { Context, Effect, Layer } from "effect"
import { SqlClient } from "effect/sql"
import { RelayConfig, type RelayConfigShape } from "../config/config.ts"
import type { DatabaseError } from "../domain/errors.ts"
import { toDatabaseError } from "./sql-error.ts"

/** Room left for what a relay legitimately does: a claim's own statement time, a mark landing late. */
export const STUCK_SLACK_MS = 60_000

export interface StuckBounds {
  /** A lease ending later than now + this was not written by a relay with these settings. */
  readonly leaseBeyondMs: number
  /** A retry time later than now + this was not written by a relay with these settings. */
  readonly retryBeyondMs: number
  /** A key whose oldest pending row is older than this counts as stalled. */
  readonly keyStallMs: number
}

export const stuckBounds = (config: Pick<RelayConfigShape, "leaseMs" | "backoffMaxMs" | "keyStallMs">): StuckBounds => ({
  leaseBeyondMs: config.leaseMs + STUCK_SLACK_MS,
  // The backoff is capped hard at BACKOFF_MAX_MS, jitter included (domain/backoff.ts).
  retryBeyondMs: config.backoffMaxMs + STUCK_SLACK_MS,
  keyStallMs: config.keyStallMs,
})

const seconds = (ms: number) => ms / 1000

/** SQL conditions on an outbox_event row (columns unqualified). `infinity` is beyond every bound. */
export const stuckConditions = (sql: SqlClient.SqlClient, b: StuckBounds) => {
  const leaseBeyond = sql`locked_until > now() + make_interval(secs => ${seconds(b.leaseBeyondMs)})`
  const retryBeyond = sql`next_attempt_at > now() + make_interval(secs => ${seconds(b.retryBeyondMs)})`
  return {
    leaseBeyond,
    retryBeyond,
    impossible: sql`(${leaseBeyond} OR ${retryBeyond})`,
    stalled: sql`created_at < now() - make_interval(secs => ${seconds(b.keyStallMs)})`,
    /** Due to die, but its dead letter waits for the dead-letter topic (the lead's mark: FAILED with a dead_reason). */
    waitingForDeadLetterTopic: sql`(status = 'FAILED' AND dead_reason IS NOT NULL)`,
  }
}

/** Why a listed row is worth a look. */
export type PendingFlag = "lease_beyond_settings" | "retry_beyond_settings" | "stalled" | "waiting_for_dlq"

export interface PendingRow {
  readonly id: string
  readonly event_type: string
  readonly dedup_key: string
  readonly aggregate_key: string | null
  readonly status: string
  readonly attempts: number
  readonly created_at: string
  readonly age_seconds: number
  readonly next_attempt_at: string
  readonly locked_by: string | null
  readonly locked_until: string | null
  readonly dead_reason: string | null
  readonly last_error: string | null
  /** Pending rows of the same key behind this one (they wait for it). */
  readonly rows_behind: number
  readonly flags: ReadonlyArray<PendingFlag>
}

export interface StuckListing {
  /** The oldest pending row of each key (and unkeyed pending rows), oldest first. */
  readonly oldest_per_key: ReadonlyArray<PendingRow>
  /** Pending rows leased or scheduled beyond the settings, wherever they sit in their key. */
  readonly beyond_settings: ReadonlyArray<PendingRow>
  readonly bounds: { readonly lease_beyond_ms: number; readonly retry_beyond_ms: number; readonly key_stall_ms: number }
}

export interface FreeSelection {
  /** These pending rows, when they are beyond the settings or not leased now (a live lease is never cut). */
  readonly ids: ReadonlyArray<string>
  /** Every pending row beyond the settings. */
  readonly all: boolean
}

export interface FreeResult {
  readonly dryRun: boolean
  readonly freed: ReadonlyArray<PendingRow>
  /** Ids asked for that were not freed: not pending, not found, or held by a lease within LEASE_MS. */
  readonly notFreed: ReadonlyArray<string>
  readonly auditId: string | null
}

const MAX_FREE = 100_000

/** A timestamp as ISO 8601 UTC, or 'infinity' / '-infinity' as PostgreSQL spells them. */
const iso = (column: string) =>
  `CASE WHEN isfinite(${column}) THEN to_char(${column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') ELSE ${column}::text END`

export class StuckRows extends Context.Service<
  StuckRows,
  {
    readonly list: (limit: number) => Effect.Effect<StuckListing, DatabaseError>
    readonly free: (
      selection: FreeSelection,
      by: { readonly actor: string; readonly origin: "cli" | "admin-api"; readonly dryRun: boolean },
    ) => Effect.Effect<FreeResult, DatabaseError>
  }
>()("outbox-relay/StuckRows") {
  static readonly make = (bounds: StuckBounds) =>
    Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      const c = stuckConditions(sql, bounds)

      const columns = sql`
        o.id::text AS id, o.event_type, o.dedup_key, o.aggregate_key, o.status, o.attempts,
        ${sql.literal(iso("o.created_at"))} AS created_at,
        extract(epoch FROM now() - o.created_at)::float8 AS age_seconds,
        ${sql.literal(iso("o.next_attempt_at"))} AS next_attempt_at,
        o.locked_by, ${sql.literal(`CASE WHEN o.locked_until IS NULL THEN NULL ELSE ${iso("o.locked_until")} END`)} AS locked_until,
        o.dead_reason, left(o.last_error, 500) AS last_error,
        CASE WHEN o.aggregate_key IS NULL THEN 0 ELSE (
          SELECT count(*) FROM outbox_event later
           WHERE later.aggregate_key = o.aggregate_key AND later.id > o.id AND later.status IN ('NEW', 'FAILED'))
        END::int AS rows_behind,
        array_remove(ARRAY[
          CASE WHEN ${c.leaseBeyond} THEN 'lease_beyond_settings' END,
          CASE WHEN ${c.retryBeyond} THEN 'retry_beyond_settings' END,
          CASE WHEN ${c.stalled} THEN 'stalled' END,
          CASE WHEN ${c.waitingForDeadLetterTopic} THEN 'waiting_for_dlq' END], NULL) AS flags`

      // Unqualified column names in the conditions resolve to `o`: the only outbox_event in the
      // outer FROM (the subqueries name theirs `later` and `older`).
      const heads = (limit: number) => sql<PendingRow>`
        SELECT ${columns}
          FROM outbox_event o
         WHERE o.status IN ('NEW', 'FAILED')
           AND (o.aggregate_key IS NULL OR NOT EXISTS (
                 SELECT 1 FROM outbox_event older
                  WHERE older.aggregate_key = o.aggregate_key AND older.id < o.id AND older.status IN ('NEW', 'FAILED')))
         ORDER BY o.id
         LIMIT ${limit}`

      const beyond = (limit: number) => sql<PendingRow>`
        SELECT ${columns}
          FROM outbox_event o
         WHERE o.status IN ('NEW', 'FAILED') AND ${c.impossible}
         ORDER BY o.id
         LIMIT ${limit}`

      const list = (limit: number) =>
        Effect.all([heads(limit), beyond(limit)]).pipe(
          Effect.map(
            ([oldest, stuck]): StuckListing => ({
              oldest_per_key: oldest,
              beyond_settings: stuck,
              bounds: { lease_beyond_ms: bounds.leaseBeyondMs, retry_beyond_ms: bounds.retryBeyondMs, key_stall_ms: bounds.keyStallMs },
            }),
          ),
          Effect.mapError(toDatabaseError("list stuck rows")),
        )

      const free = (s: FreeSelection, by: { actor: string; origin: "cli" | "admin-api"; dryRun: boolean }) =>
        sql
          .withTransaction(
            Effect.gen(function* () {
              // Named rows are freed when beyond the settings or not leased now: a lease a live
              // relay holds (within LEASE_MS) is never cut, or its batch would go out twice.
              const named =
                s.ids.length > 0
                  ? sql`(o.id = ANY(${s.ids}::bigint[]) AND (${c.impossible} OR o.locked_until IS NULL OR o.locked_until < now()))`
                  : sql`false`
              const rows = yield* sql<PendingRow>`
                SELECT ${columns}
                  FROM outbox_event o
                 WHERE o.status IN ('NEW', 'FAILED') AND (${named} OR ${s.all ? c.impossible : sql`false`})
                 ORDER BY o.id
                 LIMIT ${MAX_FREE}
                 ${by.dryRun ? sql`` : sql`FOR UPDATE OF o`}`
              const found = new Set(rows.map((r) => r.id))
              const notFreed = s.ids.filter((id) => !found.has(id))
              if (by.dryRun || rows.length === 0) return { dryRun: by.dryRun, freed: rows, notFreed, auditId: null }
              const ids = rows.map((r) => r.id)
              // Claimable now, by any instance; attempts and the rest of the retry state stay.
              yield* sql`
                UPDATE outbox_event SET next_attempt_at = now(), locked_by = NULL, locked_until = NULL
                 WHERE id = ANY(${ids}::bigint[])`
              // The replay audit table: one line per operator act on the retry state, told apart by `action`.
              const selection = { action: "unstick", ids: s.ids, all: s.all }
              const [audit] = yield* sql<{ id: string }>`
                INSERT INTO outbox_replay_audit (actor, origin, selection, event_count, event_ids)
                VALUES (${by.actor}, ${by.origin}, ${JSON.stringify(selection)}::jsonb, ${ids.length}, ${ids}::bigint[])
                RETURNING id::text AS id`
              return { dryRun: false, freed: rows, notFreed, auditId: audit?.id ?? null }
            }),
          )
          .pipe(Effect.mapError(toDatabaseError("free stuck rows")))

      return StuckRows.of({ list, free })
    })

  static readonly layerWith = (bounds: StuckBounds) => Layer.effect(StuckRows, StuckRows.make(bounds))

  static readonly layer = Layer.effect(
    StuckRows,
    Effect.gen(function* () {
      return yield* StuckRows.make(stuckBounds(yield* RelayConfig))
    }),
  )
}
