/**
 * The table refuses what the relay cannot carry (ROW_LIMITS, migration 7), against the real
 * PostgreSQL: the writer refuses the same bounds by field before any SQL, a plain INSERT gets
 * PostgreSQL's error naming the constraint, a row at every bound takes every mark the relay
 * writes (its index entries fit), and migrating a table that already holds rows beyond a bound
 * settles the pending ones and leaves history alone.
 */

import { PgClient } from "@effect/sql-pg"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import { sqlStateOf } from "../../src/domain/database-fault.ts"
import { ROW_LIMITS } from "../../src/domain/row-limits.ts"
import { DeadLetterStore } from "../../src/outbox/dead-letter-store.ts"
import { migrations } from "../../src/outbox/migrations/index.ts"
import { ROW_CHECKS } from "../../src/outbox/row-limits-sql.ts"
import { migrate } from "../../src/outbox/schema-migrator.ts"
import { sqlErrorMessage } from "../../src/outbox/sql-error.ts"
import { InvalidOutboxEvent, RequestId, writeEvents, writeOutboxEvents } from "../../src/writer.ts"
import { openStore, relayConfig } from "../support/relay-harness.ts"
import { sqlLayer, testDatabase } from "../support/test-database.ts"

/** Text of exactly `bytes` octets that no compression shrinks (an index entry is stored as is). */
const incompressible = (bytes: number) => {
  let s = ""
  while (s.length < bytes) s += Math.random().toString(36).slice(2)
  return s.slice(0, bytes)
}

const withSql = <A, E>(url: string, f: (sql: SqlClient.SqlClient) => Effect.Effect<A, E>) =>
  Effect.gen(function* () {
    return yield* f(yield* SqlClient.SqlClient)
  }).pipe(Effect.provide(sqlLayer(url)))

/** A plain INSERT's error: PostgreSQL's SQLSTATE and words. */
const refusal = (url: string, statement: string) =>
  withSql(url, (sql) => sql.unsafe(statement)).pipe(
    Effect.flip,
    Effect.map((e) => ({ sqlState: sqlStateOf(e), message: sqlErrorMessage(e) })),
  )

const count = (url: string) =>
  withSql(url, (sql) => sql<{ n: number }>`SELECT count(*)::int AS n FROM outbox_event`).pipe(Effect.map(([r]) => r!.n))

describe("row limits", () => {
  it.live("the writer refuses every bound by field and limit before any SQL runs; its batch writes nothing", () =>
    Effect.gen(function* () {
      const db = yield* testDatabase()
      const base = { eventType: "search_click", payload: { n: 1 } }
      const refused = yield* writeEvents([
        { ...base, dedupKey: "ok-0" },
        { ...base, dedupKey: "type", eventType: "t".repeat(ROW_LIMITS.eventTypeBytes + 1) },
        // Bytes, not characters: 513 two-byte characters are 1,026 bytes.
        { ...base, dedupKey: "é".repeat(ROW_LIMITS.dedupKeyBytes / 2 + 1) },
        { ...base, dedupKey: "key", aggregateKey: "k".repeat(ROW_LIMITS.aggregateKeyBytes + 1) },
        { ...base, dedupKey: "request", requestId: "r".repeat(ROW_LIMITS.requestIdBytes + 1) },
        { ...base, dedupKey: "nul-header", headers: { tenant: "a\u0000b" } },
      ]).pipe(Effect.flip, Effect.provide(sqlLayer(db.url)))
      expect(refused).toBeInstanceOf(InvalidOutboxEvent)
      const problems = (refused as InvalidOutboxEvent).problems.map((p) => [p.index, p.field, p.message])
      expect(problems).toEqual([
        [1, "eventType", `must be at most ${ROW_LIMITS.eventTypeBytes} bytes (UTF-8)`],
        [2, "dedupKey", `must be at most ${ROW_LIMITS.dedupKeyBytes} bytes (UTF-8)`],
        [3, "aggregateKey", `must be at most ${ROW_LIMITS.aggregateKeyBytes} bytes (UTF-8)`],
        [4, "requestId", `must be at most ${ROW_LIMITS.requestIdBytes} bytes (UTF-8)`],
        [5, "headers", "must not contain NUL characters"],
      ])
      // A request id from the context is bounded like a given one, in both writer forms.
      const fromContext = yield* writeEvents([{ ...base, dedupKey: "ctx" }]).pipe(
        Effect.provideService(RequestId, "c".repeat(ROW_LIMITS.requestIdBytes + 1)),
        Effect.flip,
        Effect.provide(sqlLayer(db.url)),
      )
      expect(fromContext.message).toContain(`requestId must be at most ${ROW_LIMITS.requestIdBytes} bytes`)
      const plain = yield* Effect.promise(() =>
        writeOutboxEvents({ query: async () => ({ rows: [] }) }, [{ ...base, dedupKey: "x", aggregateKey: "k".repeat(1_025) }]).then(
          () => "written",
          (e: unknown) => (e instanceof InvalidOutboxEvent ? e.message : String(e)),
        ),
      )
      expect(plain).toContain("aggregateKey must be at most 1024 bytes")
      // At the bounds exactly, the writer and the table take it.
      const atBounds = yield* writeEvents([
        {
          ...base,
          eventType: "t".repeat(ROW_LIMITS.eventTypeBytes),
          dedupKey: incompressible(ROW_LIMITS.dedupKeyBytes),
          aggregateKey: incompressible(ROW_LIMITS.aggregateKeyBytes),
          requestId: "r".repeat(ROW_LIMITS.requestIdBytes),
        },
      ]).pipe(Effect.provide(sqlLayer(db.url)))
      expect(atBounds.map((r) => r._tag)).toEqual(["Inserted"])
      expect(yield* count(db.url)).toBe(1)
    }),
  )

  it.live("a plain INSERT that breaks a bound gets PostgreSQL's check error naming the constraint", () =>
    Effect.gen(function* () {
      const db = yield* testDatabase()
      const insert = (columns: string, values: string) =>
        `INSERT INTO outbox_event (dedup_key, event_type, payload${columns}) VALUES ('d-' || gen_random_uuid(), 'search_click', '{}'${values})`
      const cases: ReadonlyArray<readonly [constraint: string, statement: string]> = [
        ["outbox_event_event_type_bytes", `INSERT INTO outbox_event (dedup_key, event_type, payload) VALUES ('d', repeat('t', 256), '{}')`],
        ["outbox_event_aggregate_key_bytes", insert(", aggregate_key", ", repeat('k', 1025)")],
        ["outbox_event_dedup_key_bytes", `INSERT INTO outbox_event (dedup_key, event_type, payload) VALUES (repeat('é', 513), 't', '{}')`],
        ["outbox_event_request_id_bytes", insert(", request_id", ", repeat('r', 17 * 1024 * 1024)")],
        ["outbox_event_traceparent_bytes", insert(", traceparent", ", repeat('0', 257)")],
        ["outbox_event_headers_strings", insert(", headers", `, '{"n": 1}'`)],
        ["outbox_event_headers_strings", insert(", headers", `, '["a"]'`)],
        ["outbox_event_headers_strings", insert(", headers", `, '"text"'`)],
        ["outbox_event_attempts_range", insert(", attempts", ", -1")],
        ["outbox_event_attempts_range", insert(", attempts", `, ${ROW_LIMITS.maxAttempts + 1}`)],
        ["outbox_event_next_attempt_finite", insert(", next_attempt_at", ", 'infinity'")],
        ["outbox_event_next_attempt_finite", insert(", next_attempt_at", ", '-infinity'")],
        ["outbox_event_locked_until_finite", insert(", locked_by, locked_until", ", 'ghost', 'infinity'")],
      ]
      expect(new Set(cases.map(([name]) => name))).toEqual(new Set(ROW_CHECKS.map(([name]) => name)))
      for (const [constraint, statement] of cases) {
        const error = yield* refusal(db.url, statement)
        expect(error, constraint).toEqual({
          sqlState: "23514",
          message: `new row for relation "outbox_event" violates check constraint "${constraint}"`,
        })
      }
      expect(yield* count(db.url)).toBe(0)
    }),
  )

  it.live("a row at every bound takes every mark the relay writes: its index entries fit and its attempts have room", () =>
    Effect.gen(function* () {
      const db = yield* testDatabase()
      const store = yield* openStore(relayConfig(db.url))
      // Random text: PostgreSQL compresses a long index entry, so repeated characters would prove nothing.
      const row = (i: number) =>
        `(${[
          `'${incompressible(ROW_LIMITS.dedupKeyBytes - 1)}${i}'`,
          `'${incompressible(ROW_LIMITS.eventTypeBytes)}'`,
          `'${incompressible(ROW_LIMITS.aggregateKeyBytes - 1)}${i}'`,
          `'{"blob": "x"}'`,
          `'{"h": "${incompressible(2_000)}"}'`,
          `'${incompressible(ROW_LIMITS.requestIdBytes)}'`,
          `'${incompressible(ROW_LIMITS.traceparentBytes)}'`,
          `${ROW_LIMITS.maxAttempts}`,
        ].join(", ")})`
      yield* withSql(db.url, (sql) =>
        sql.unsafe(`INSERT INTO outbox_event (dedup_key, event_type, aggregate_key, payload, headers, request_id, traceparent, attempts)
                    VALUES ${[1, 2, 3].map(row).join(", ")}`),
      )
      const [dead, failed, sent] = yield* store.claimDue(10)
      expect(
        yield* store.markDead([
          { ...dead!, reason: "attempts_exhausted", error: "e".repeat(ROW_LIMITS.lastErrorChars), countsAttempt: true },
        ]),
      ).toEqual({
        marked: [dead!.id],
        lost: [],
      })
      expect(yield* store.markSent([{ ...sent!, topic: "t", partition: 0, offset: "1" }])).toEqual({ marked: [sent!.id], lost: [] })
      // A FAILED mark keeps the row pending: its count must stay within the pending bound, so the
      // relay only ever fails a row below MAX_ATTEMPTS (≤ 1,000); here, one below the bound.
      yield* withSql(db.url, (sql) => sql`UPDATE outbox_event SET attempts = attempts - 1 WHERE id = ${failed!.id}::bigint`)
      expect(
        yield* store.markFailed([
          { ...failed!, error: "e".repeat(ROW_LIMITS.lastErrorChars), retryInMs: 0, countsAttempt: true, deadReason: null },
        ]),
      ).toEqual({
        marked: [failed!.id],
        lost: [],
      })
      const states = yield* withSql(
        db.url,
        (sql) => sql<{ status: string; attempts: number }>`SELECT status, attempts FROM outbox_event ORDER BY id`,
      )
      expect(states).toEqual([
        { status: "DEAD", attempts: ROW_LIMITS.maxAttempts + 1 },
        { status: "FAILED", attempts: ROW_LIMITS.maxAttempts },
        { status: "SENT", attempts: ROW_LIMITS.maxAttempts },
      ])
    }),
  )

  it.live(
    "migrating a table with rows beyond a bound settles the pending ones DEAD out_of_limits and leaves history; replaying one is refused by name",
    () =>
      Effect.gen(function* () {
        const db = yield* testDatabase({ migrated: false })
        const pg = PgClient.layer({ url: Redacted.make(db.url), maxConnections: 1 })
        // The schema as it was before migration 7.
        yield* withSql(db.url, (sql) =>
          Effect.gen(function* () {
            yield* sql`CREATE TABLE outbox_relay_schema (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`
            for (const m of migrations.filter((m) => m.version < 7)) {
              for (const statement of m.statements) yield* sql.unsafe(statement)
              yield* sql`INSERT INTO outbox_relay_schema (version, name) VALUES (${m.version}, ${m.name})`
            }
            yield* sql.unsafe(`
            INSERT INTO outbox_event (dedup_key, event_type, aggregate_key, payload, headers, request_id, attempts, next_attempt_at, status, locked_by, locked_until)
            VALUES ('big-type', repeat('t', 10000), 'K', '{}', '{}', NULL, 0, now(), 'NEW', NULL, NULL),
                   ('bad-headers', 'search_click', 'K', '{}', '{"n": 1, "s": "x"}', NULL, 0, now(), 'FAILED', NULL, NULL),
                   ('many-attempts', 'search_click', NULL, '{}', '{}', repeat('r', 300), 2147483647, 'infinity', 'FAILED', 'ghost', 'infinity'),
                   ('fine', 'search_click', 'K', '{}', '{}', 'req', 0, now(), 'NEW', NULL, NULL),
                   ('old-sent', repeat('s', 300), NULL, '{}', '[1]', NULL, 1, now(), 'SENT', NULL, NULL),
                   ('old-dead', repeat('d', 300), NULL, '{}', '{}', NULL, 1, now(), 'DEAD', NULL, NULL)`)
          }),
        )
        const report = yield* migrate().pipe(Effect.provide(pg))
        expect(report.applied).toEqual(["0007_row_limits"])
        const rows = yield* withSql(
          db.url,
          (sql) =>
            sql<{
              dedup_key: string
              status: string
              dead_reason: string | null
              last_error: string | null
              type_bytes: number
              headers: unknown
              attempts: number
              finite: boolean
              locked_by: string | null
            }>`SELECT dedup_key, status, dead_reason, last_error, octet_length(event_type) AS type_bytes, headers, attempts,
                  isfinite(next_attempt_at) AND coalesce(isfinite(locked_until), true) AS finite, locked_by
             FROM outbox_event ORDER BY id`,
        )
        const [bigType, badHeaders, manyAttempts, fine, oldSent, oldDead] = rows
        expect(bigType).toMatchObject({ status: "DEAD", dead_reason: "out_of_limits", type_bytes: 63 })
        expect(bigType!.last_error).toContain("broke outbox_event_event_type_bytes")
        expect(bigType!.last_error).toContain("event_type 10000")
        expect(badHeaders).toMatchObject({ status: "DEAD", dead_reason: "out_of_limits", headers: {} })
        expect(badHeaders!.last_error).toContain("broke outbox_event_headers_strings")
        expect(manyAttempts).toMatchObject({ status: "DEAD", attempts: ROW_LIMITS.maxAttempts, finite: true, locked_by: null })
        expect(manyAttempts!.last_error).toContain(
          "broke outbox_event_request_id_bytes, outbox_event_attempts_range, outbox_event_next_attempt_finite, outbox_event_locked_until_finite",
        )
        expect(fine).toMatchObject({ status: "NEW", dead_reason: null })
        // History is not rewritten: the constraints stay NOT VALID.
        expect(oldSent).toMatchObject({ status: "SENT", type_bytes: 300, headers: [1] })
        expect(oldDead).toMatchObject({ status: "DEAD", type_bytes: 300, dead_reason: null })
        const notValid = yield* withSql(
          db.url,
          (sql) =>
            sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_constraint WHERE conrelid = 'outbox_event'::regclass AND NOT convalidated`,
        )
        expect(notValid[0]!.n).toBe(ROW_CHECKS.length)

        // A history row beyond a bound cannot be requeued: the whole replay is refused, naming the
        // bound, and nothing of it is requeued. A settled row is within the bounds and can be.
        const replay = (dedupKeys: ReadonlyArray<string>) =>
          Effect.gen(function* () {
            const store = yield* DeadLetterStore
            return yield* store.replay({ dedupKeys }, { actor: "test", origin: "cli", dryRun: false })
          }).pipe(Effect.provide(DeadLetterStore.layer.pipe(Layer.provide(sqlLayer(db.url)))))
        const refused = yield* replay(["old-dead", "bad-headers"]).pipe(Effect.flip)
        expect(refused).toMatchObject({ _tag: "DatabaseError", fault: "data", sqlState: "23514" })
        expect(refused.message).toBe(
          'replay: new row for relation "outbox_event" violates check constraint "outbox_event_event_type_bytes"',
        )
        const after = yield* withSql(
          db.url,
          (sql) => sql<{ status: string }>`SELECT status FROM outbox_event WHERE dedup_key IN ('old-dead', 'bad-headers')`,
        )
        expect(after.map((r) => r.status)).toEqual(["DEAD", "DEAD"])
        expect((yield* replay(["bad-headers"])).events.map((e) => e.dedup_key)).toEqual(["bad-headers"])
      }),
  )
})
