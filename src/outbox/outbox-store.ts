/**
 * The claim / mark protocol on the outbox table. Every statement is short: no
 * transaction stays open while Kafka is called, and marks only touch rows still held under
 * the claim that read them, so a lease taken over by another instance, or by a later claim of
 * this one after its own lease expired, is never overwritten.
 */
import { PgClient } from "@effect/sql-pg"
import { Context, Effect, Layer, Stream } from "effect"
import { SqlClient, type Statement } from "effect/sql"
import { RelayConfig } from "../config/config.ts"
import type { DatabaseError, DeadReason, SchemaVersionMismatch } from "../domain/errors.ts"
import type { ClaimedEvent, Delivery, EventStatus, NewEvent, RecordColumn } from "../domain/outbox-event.ts"
import { ROW_LIMITS } from "../domain/row-limits.ts"
import type { OutboxRow } from "../writer/event-input.ts"
import { INSERT_OUTBOX_EVENTS, type InsertedRow, insertParameters } from "../writer/outbox-insert.ts"
import { insertWakeUps } from "./insert-notifications.ts"
import { InstanceId } from "./instance-id.ts"
import { WITHIN_LIMITS_SET } from "./row-limits-sql.ts"
import { requireCurrentSchema } from "./schema-migrator.ts"
import { toDatabaseError } from "./sql-error.ts"

/**
 * A row as one claim holds it. The lease fences every write: an instance whose own lease
 * expired can claim the row again, and the earlier claim's mark or release must then miss.
 */
export interface Lease {
  readonly id: string
  readonly lease: string
}
export interface SentMark extends Delivery, Lease {}
export interface FailedMark extends Lease {
  readonly error: string
  readonly retryInMs: number
  /** Adds one to attempts; a row waiting only for its dead letter spends none. */
  readonly countsAttempt: boolean
  /** Set when the event is dead and waits, FAILED, for its letter to reach the dead-letter topic. */
  readonly deadReason: DeadReason | null
}
export interface DeadMark extends Lease {
  readonly reason: DeadReason
  readonly error: string
  readonly countsAttempt: boolean
}
/** A row whose mark PostgreSQL refused (a data error): settled DEAD `unmarkable` with this error. */
export interface UnmarkableMark extends Lease {
  readonly error: string
}

/** Rows a mark did update, and rows whose lease another instance had taken over meanwhile. */
export interface MarkResult {
  readonly marked: ReadonlyArray<string>
  readonly lost: ReadonlyArray<string>
}

export interface AppendResult {
  /** Ids of the rows written; an event whose dedup_key already existed is not among them. */
  readonly inserted: ReadonlyArray<string>
  readonly duplicates: number
}

export type StatusCounts = Readonly<Record<EventStatus, number>>

interface ClaimRow {
  readonly id: string
  readonly event_id: string
  readonly dedup_key: string
  readonly event_type: string
  readonly aggregate_key: string | null
  readonly payload: string | null
  readonly headers: string | null
  /** Set only for a row too large to carry (then payload and headers are NULL). */
  readonly oversize_bytes: number | null
  readonly oversize_column: RecordColumn | null
  readonly request_id: string | null
  readonly traceparent: string | null
  readonly attempts: number
  readonly dead_reason: DeadReason | null
  readonly dead_error: string | null
  readonly created_at_ms: number
  readonly previous_owner: string | null
  readonly lease: string
}

const toClaimedEvent = (r: ClaimRow): ClaimedEvent => ({
  id: r.id,
  eventId: r.event_id,
  dedupKey: r.dedup_key,
  eventType: r.event_type,
  aggregateKey: r.aggregate_key,
  payload: r.payload ?? "null",
  headers: r.headers ?? "{}",
  oversize: r.oversize_bytes === null ? null : { bytes: Number(r.oversize_bytes), column: r.oversize_column ?? "payload" },
  requestId: r.request_id,
  traceparent: r.traceparent,
  attempts: r.attempts,
  waitingDeadLetter: r.dead_reason === null ? null : { reason: r.dead_reason, error: r.dead_error ?? "" },
  createdAtMs: Number(r.created_at_ms),
  takenOverFrom: r.previous_owner,
  lease: r.lease,
})

/**
 * A text column of a row too large to carry, when the column itself is beyond its bound: its
 * first 64 characters and its size, enough for the dead letter's headers (event_id names the
 * row); the rest never leaves the server. left() reads only the first slice of a TOASTed value.
 */
const standIn = (column: string) => `left(${column}, 64) || '… (' || octet_length(${column}) || ' bytes)'`

/** The largest record column of a claimed row (named as in RecordColumn), from the sizes `eligible` measured. */
const LARGEST_COLUMN = `(SELECT v.name FROM (VALUES ('payload', e.payload_bytes), ('headers', e.headers_bytes),
    ('event_type', e.event_type_bytes), ('aggregate_key', e.aggregate_key_bytes), ('dedup_key', e.dedup_key_bytes),
    ('request_id', e.request_id_bytes), ('traceparent', e.traceparent_bytes)) AS v(name, bytes)
  ORDER BY v.bytes DESC NULLS LAST LIMIT 1)`

const lostFrom = (requested: ReadonlyArray<{ readonly id: string }>, marked: ReadonlyArray<{ readonly id: string }>): MarkResult => {
  const done = new Set(marked.map((r) => r.id))
  return { marked: [...done], lost: requested.filter((r) => !done.has(r.id)).map((r) => r.id) }
}

export class OutboxStore extends Context.Service<
  OutboxStore,
  {
    /**
     * Leases up to `limit` due rows, oldest first, keeping each aggregate_key in id order.
     * `after`: only rows with a greater id (a drain's cursor past its own batches in flight).
     */
    readonly claimDue: (limit: number, after?: string) => Effect.Effect<ReadonlyArray<ClaimedEvent>, DatabaseError>
    readonly markSent: (marks: ReadonlyArray<SentMark>) => Effect.Effect<MarkResult, DatabaseError>
    readonly markFailed: (marks: ReadonlyArray<FailedMark>) => Effect.Effect<MarkResult, DatabaseError>
    readonly markDead: (marks: ReadonlyArray<DeadMark>) => Effect.Effect<MarkResult, DatabaseError>
    /**
     * Settles rows DEAD `unmarkable`, one statement per row, with every column brought within
     * ROW_LIMITS (a row that broke a bound can take no other update while the constraints exist).
     */
    readonly settleUnmarkable: (marks: ReadonlyArray<UnmarkableMark>) => Effect.Effect<MarkResult, DatabaseError>
    /**
     * Extends the leases of rows still held under the given lease (a batch publishing for long):
     * returns each renewed row with its new lease; a row not returned is no longer held.
     */
    readonly renewLeases: (leases: ReadonlyArray<Lease>) => Effect.Effect<ReadonlyArray<Lease>, DatabaseError>
    /** Gives back leases unpublished (graceful stop), so another instance need not wait for expiry. */
    readonly release: (leases: ReadonlyArray<Lease>) => Effect.Effect<number, DatabaseError>
    /**
     * Who holds these rows now (`null`: nobody), for rows a mark found no longer ours: another
     * instance that took them over, or nobody because the database lost our claim.
     */
    readonly leaseHolders: (ids: ReadonlyArray<string>) => Effect.Effect<ReadonlyMap<string, string | null>, DatabaseError>
    readonly append: (events: ReadonlyArray<NewEvent>) => Effect.Effect<AppendResult, DatabaseError>
    readonly countByStatus: Effect.Effect<StatusCounts, DatabaseError>
    /** Fails unless the table's schema is the one this build understands. */
    readonly requireCurrentSchema: Effect.Effect<void, DatabaseError | SchemaVersionMismatch>
    /** One element per insert wake-up (NOTIFY), and one at each (re)connect; never fails. */
    readonly insertWakeUps: Stream.Stream<void>
  }
>()("outbox-relay/OutboxStore") {
  static readonly layer = Layer.effect(
    OutboxStore,
    Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      const pg = yield* PgClient.PgClient
      const config = yield* RelayConfig
      const me = yield* InstanceId
      const leaseSeconds = config.leaseMs / 1000
      const maxBytes = config.maxRecordBytes
      const unsafe = (fragment: string) => sql.literal(fragment)

      const claimDue = (limit: number, after = "0") =>
        // SKIP LOCKED lets instances claim side by side without waiting on each other.
        // A keyed row is eligible only when every older pending row of its key is in
        // this same claim, or already leased by this instance (claimed earlier, so it is
        // ahead in this instance's ordered pipeline, which holds back a key's later rows
        // if an earlier batch fails). A row held by another instance, or waiting for its
        // retry, holds back the later rows of its key (and only of its key). Two
        // concurrent claims cannot split a key: the older row is locked or leased by one
        // of them, so the other skips the later row. `after` narrows only where the walk
        // starts, never the ordering check, which still sees every older pending row.
        sql<ClaimRow>`
          WITH candidates AS MATERIALIZED (
            -- octet_length of a stored text reads its size from the TOAST header, not the value.
            SELECT id, aggregate_key, locked_by, payload, headers,
                   octet_length(event_type)::bigint AS event_type_bytes, octet_length(aggregate_key)::bigint AS aggregate_key_bytes,
                   octet_length(dedup_key)::bigint AS dedup_key_bytes, octet_length(request_id)::bigint AS request_id_bytes,
                   octet_length(traceparent)::bigint AS traceparent_bytes
              FROM outbox_event
             WHERE status IN ('NEW', 'FAILED')
               AND id > ${after}::bigint
               AND next_attempt_at <= now()
               AND (locked_until IS NULL OR locked_until < now())
             ORDER BY id
             LIMIT ${limit}
             FOR UPDATE SKIP LOCKED
          ), texts AS (
            -- The record's text columns: the key, and the columns that become headers
            -- (dedup_key counted again when it is the key).
            SELECT c.*, c.event_type_bytes + c.dedup_key_bytes + coalesce(c.aggregate_key_bytes, c.dedup_key_bytes)
                          + coalesce(c.request_id_bytes, 0) + coalesce(c.traceparent_bytes, 0) AS text_bytes
              FROM candidates c
          ), eligible AS MATERIALIZED (
            -- The JSON text is made once, here, so its size can be checked before it is sent:
            -- only for the rows this claim takes, and not at all when the text columns alone are
            -- too large (printing a 17 MiB jsonb takes a second of the lease on a busy server).
            SELECT t.id, left(t.locked_by, 1024) AS previous_owner, t.event_type_bytes, t.aggregate_key_bytes, t.dedup_key_bytes,
                   t.request_id_bytes, t.traceparent_bytes, t.text_bytes,
                   CASE WHEN t.text_bytes <= ${maxBytes} THEN t.payload::text END AS payload_text,
                   CASE WHEN t.text_bytes <= ${maxBytes} THEN t.headers::text END AS headers_text,
                   pg_column_size(t.payload)::bigint AS payload_stored, pg_column_size(t.headers)::bigint AS headers_stored
              FROM texts t
             WHERE t.aggregate_key IS NULL
                OR NOT EXISTS (
                  SELECT 1 FROM outbox_event older
                   WHERE older.aggregate_key = t.aggregate_key
                     AND older.id < t.id
                     AND older.status IN ('NEW', 'FAILED')
                     AND older.id NOT IN (SELECT id FROM candidates)
                     -- coalesce: an unleased older row (NULLs) must count as blocking, not as unknown.
                     AND NOT coalesce(older.locked_by = ${me} AND older.locked_until > now(), false))
          ), measured AS (
            -- The whole record. Every column counts: any one of them can be too large for
            -- PostgreSQL's client (16 MiB) or for Kafka. JSON that was not printed counts by its
            -- stored size (the row is too large anyway).
            SELECT e.*, coalesce(octet_length(e.payload_text), e.payload_stored) AS payload_bytes,
                   coalesce(octet_length(e.headers_text), e.headers_stored) AS headers_bytes,
                   e.text_bytes + coalesce(octet_length(e.payload_text), e.payload_stored)
                     + coalesce(octet_length(e.headers_text), e.headers_stored) AS record_bytes
              FROM eligible e
          )
          UPDATE outbox_event o
             SET locked_by = ${me}, locked_until = now() + make_interval(secs => ${leaseSeconds})
            FROM measured e
           WHERE o.id = e.id
          RETURNING o.id::text AS id, o.event_id::text AS event_id,
                    -- A row too large to carry is claimed without its content and without any
                    -- column beyond its bound; it is dead-lettered. The aggregate_key is kept
                    -- whole unless it alone is too large, so every row of a key names it alike.
                    CASE WHEN e.record_bytes <= ${maxBytes} OR e.dedup_key_bytes <= ${ROW_LIMITS.dedupKeyBytes}
                         THEN o.dedup_key ELSE ${unsafe(standIn("o.dedup_key"))} END AS dedup_key,
                    CASE WHEN e.record_bytes <= ${maxBytes} OR e.event_type_bytes <= ${ROW_LIMITS.eventTypeBytes}
                         THEN o.event_type ELSE ${unsafe(standIn("o.event_type"))} END AS event_type,
                    CASE WHEN e.aggregate_key_bytes IS NULL OR e.aggregate_key_bytes <= ${maxBytes}
                         THEN o.aggregate_key ELSE ${unsafe(standIn("o.aggregate_key"))} END AS aggregate_key,
                    CASE WHEN e.record_bytes <= ${maxBytes} OR e.request_id_bytes <= ${ROW_LIMITS.requestIdBytes}
                         THEN o.request_id ELSE ${unsafe(standIn("o.request_id"))} END AS request_id,
                    CASE WHEN e.record_bytes <= ${maxBytes} OR e.traceparent_bytes <= ${ROW_LIMITS.traceparentBytes}
                         THEN o.traceparent ELSE ${unsafe(standIn("o.traceparent"))} END AS traceparent,
                    CASE WHEN e.record_bytes <= ${maxBytes} THEN e.payload_text END AS payload,
                    CASE WHEN e.record_bytes <= ${maxBytes} THEN e.headers_text END AS headers,
                    CASE WHEN e.record_bytes > ${maxBytes} THEN e.record_bytes::float8 END AS oversize_bytes,
                    CASE WHEN e.record_bytes > ${maxBytes} THEN ${unsafe(LARGEST_COLUMN)} END AS oversize_column,
                    o.attempts,
                    -- A FAILED row with a dead reason is dead already; its letter waits for the DLQ.
                    -- Both are cut to what the relay writes: a row written by SQL may hold anything.
                    left(o.dead_reason, 64) AS dead_reason,
                    CASE WHEN o.dead_reason IS NOT NULL THEN left(o.last_error, ${ROW_LIMITS.lastErrorChars}) END AS dead_error,
                    (extract(epoch FROM o.created_at) * 1000)::float8 AS created_at_ms,
                    e.previous_owner,
                    -- The lease as text keeps its microseconds: marks compare it exactly.
                    o.locked_until::text AS lease`.pipe(
          // RETURNING order is not the claim order; publishing in id order is what keeps keys ordered.
          Effect.map((rows) => rows.map(toClaimedEvent).sort((a, b) => compareIds(a.id, b.id))),
          Effect.mapError(toDatabaseError("claim")),
        )

      /**
       * The one shape of every write after a claim: an UPDATE of the given rows that lands
       * only where this instance still holds the row under the very lease its claim wrote
       * (`d.lease`), so a late write from an earlier claim, or after a takeover, changes nothing.
       */
      const fenced = <R extends { readonly id: string }>(
        leases: ReadonlyArray<Lease>,
        set: Statement.Fragment,
        columns: Statement.Fragment,
        returning: Statement.Fragment = sql`o.id::text AS id`,
      ) =>
        sql<R>`
          UPDATE outbox_event o SET ${set}
            FROM (SELECT unnest(${leases.map((l) => l.id)}::bigint[]) AS id,
                         unnest(${leases.map((l) => l.lease)}::timestamptz[]) AS lease${columns}) d
           WHERE o.id = d.id AND o.locked_by = ${me} AND o.locked_until = d.lease AND o.status IN ('NEW', 'FAILED')
          RETURNING ${returning}`
      const noColumns = sql``
      const errorChars = ROW_LIMITS.lastErrorChars

      const markSent = (marks: ReadonlyArray<SentMark>) =>
        marks.length === 0
          ? Effect.succeed({ marked: [], lost: [] })
          : fenced<{ id: string }>(
              marks,
              sql`status = 'SENT', sent_at = now(), locked_by = NULL, locked_until = NULL, last_error = NULL,
                  kafka_topic = d.topic, kafka_partition = d.partition, kafka_offset = d.kafka_offset`,
              sql`, unnest(${marks.map((m) => m.topic)}::text[]) AS topic,
                    unnest(${marks.map((m) => m.partition)}::int[]) AS partition,
                    unnest(${marks.map((m) => m.offset)}::bigint[]) AS kafka_offset`,
            ).pipe(
              Effect.map((rows) => lostFrom(marks, rows)),
              Effect.mapError(toDatabaseError("mark sent")),
            )

      const markFailed = (marks: ReadonlyArray<FailedMark>) =>
        marks.length === 0
          ? Effect.succeed({ marked: [], lost: [] })
          : fenced<{ id: string }>(
              marks,
              sql`status = 'FAILED', attempts = o.attempts + d.counts::int, last_error = left(d.error, ${errorChars}),
                  dead_reason = nullif(d.dead_reason, ''), next_attempt_at = now() + make_interval(secs => d.retry_in_ms / 1000.0),
                  locked_by = NULL, locked_until = NULL`,
              sql`, unnest(${marks.map((m) => m.error)}::text[]) AS error,
                    unnest(${marks.map((m) => m.retryInMs)}::float8[]) AS retry_in_ms,
                    unnest(${marks.map((m) => m.countsAttempt)}::bool[]) AS counts,
                    -- '' for none: the client cannot type an array of only NULLs.
                    unnest(${marks.map((m) => m.deadReason ?? "")}::text[]) AS dead_reason`,
            ).pipe(
              Effect.map((rows) => lostFrom(marks, rows)),
              Effect.mapError(toDatabaseError("mark failed")),
            )

      const markDead = (marks: ReadonlyArray<DeadMark>) =>
        marks.length === 0
          ? Effect.succeed({ marked: [], lost: [] })
          : fenced<{ id: string }>(
              marks,
              sql`status = 'DEAD', attempts = o.attempts + d.counts::int, dead_reason = d.reason,
                  last_error = left(d.error, ${errorChars}), locked_by = NULL, locked_until = NULL`,
              sql`, unnest(${marks.map((m) => m.reason)}::text[]) AS reason,
                    unnest(${marks.map((m) => m.error)}::text[]) AS error,
                    unnest(${marks.map((m) => m.countsAttempt)}::bool[]) AS counts`,
            ).pipe(
              Effect.map((rows) => lostFrom(marks, rows)),
              Effect.mapError(toDatabaseError("mark dead")),
            )

      // One statement per row: each is the last resort for its own row, and must not fail for another's.
      const settleUnmarkable = (marks: ReadonlyArray<UnmarkableMark>) =>
        Effect.forEach(marks, (m) =>
          fenced<{ id: string }>(
            [m],
            sql`status = 'DEAD', dead_reason = 'unmarkable', last_error = left(${m.error}, ${errorChars}),
                locked_by = NULL, locked_until = NULL, ${sql.literal(WITHIN_LIMITS_SET)}`,
            noColumns,
          ),
        ).pipe(
          Effect.map((rows) => lostFrom(marks, rows.flat())),
          Effect.mapError(toDatabaseError("settle unmarkable")),
        )

      const renewLeases = (leases: ReadonlyArray<Lease>) =>
        leases.length === 0
          ? Effect.succeed([])
          : fenced<Lease>(
              leases,
              sql`locked_until = now() + make_interval(secs => ${leaseSeconds})`,
              noColumns,
              sql`o.id::text AS id, o.locked_until::text AS lease`,
            ).pipe(Effect.mapError(toDatabaseError("renew leases")))

      const release = (leases: ReadonlyArray<Lease>) =>
        leases.length === 0
          ? Effect.succeed(0)
          : fenced<{ id: string }>(leases, sql`locked_by = NULL, locked_until = NULL`, noColumns).pipe(
              Effect.map((rows) => rows.length),
              Effect.mapError(toDatabaseError("release")),
            )

      const leaseHolders = (ids: ReadonlyArray<string>) =>
        ids.length === 0
          ? Effect.succeed(new Map<string, string | null>())
          : sql<{ id: string; holder: string | null }>`
              SELECT id::text AS id,
                     CASE WHEN status IN ('SENT', 'DEAD') THEN coalesce(locked_by, 'another instance (already marked)')
                          ELSE locked_by END AS holder
                FROM outbox_event WHERE id = ANY(${ids}::bigint[])`.pipe(
              Effect.map((rows) => new Map(rows.map((r) => [r.id, r.holder]))),
              Effect.mapError(toDatabaseError("lease holders")),
            )

      // The writer's own statement (one jsonb parameter, JSON null payloads kept), without its
      // validation: callers here are the relay's tools and tests, which pass well-formed events.
      const append = (events: ReadonlyArray<NewEvent>) =>
        events.length === 0
          ? Effect.succeed({ inserted: [], duplicates: 0 })
          : sql.unsafe<InsertedRow>(INSERT_OUTBOX_EVENTS, insertParameters(events.map(toOutboxRow))).pipe(
              Effect.map((rows) => ({ inserted: rows.map((r) => r.id), duplicates: events.length - rows.length })),
              Effect.mapError(toDatabaseError("append")),
            )

      const countByStatus = sql<{ status: EventStatus; n: number }>`
        SELECT status, count(*)::int AS n FROM outbox_event GROUP BY status`.pipe(
        Effect.map((rows) => {
          const counts: Record<EventStatus, number> = { NEW: 0, SENT: 0, FAILED: 0, DEAD: 0 }
          for (const r of rows) counts[r.status] = r.n
          return counts
        }),
        Effect.mapError(toDatabaseError("count")),
      )

      return OutboxStore.of({
        claimDue,
        markSent,
        markFailed,
        markDead,
        settleUnmarkable,
        renewLeases,
        release,
        leaseHolders,
        append,
        countByStatus,
        requireCurrentSchema: requireCurrentSchema().pipe(Effect.provideService(SqlClient.SqlClient, sql)),
        insertWakeUps: insertWakeUps.pipe(Stream.provideService(PgClient.PgClient, pg)),
      })
    }),
  )
}

const toOutboxRow = (e: NewEvent): OutboxRow => ({
  dedup_key: e.dedupKey,
  event_type: e.eventType,
  aggregate_key: e.aggregateKey ?? null,
  payload: (e.payload ?? null) as OutboxRow["payload"],
  headers: e.headers ?? {},
  request_id: e.requestId ?? null,
  traceparent: e.traceparent ?? null,
})

/** Numeric order of bigint ids held as text. */
export const compareIds = (a: string, b: string): number => a.length - b.length || (a < b ? -1 : a > b ? 1 : 0)
