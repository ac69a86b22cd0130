/**
 * The writer against the real PostgreSQL and Kafka: what a caller's transaction decides
 * is what the outbox holds and what the relay puts on Kafka, read back from both.
 */
import { describe, expect, it } from "@effect/vitest"
import { DateTime, Effect, Layer, Schema, Tracer } from "effect"
import { SqlClient } from "effect/sql"
import {
  InvalidOutboxEvent,
  MaxEventBytes,
  makeOutboxWriter,
  RequestId,
  type WriteResult,
  writeEvent,
  writeEvents,
  writeOutboxEvents,
} from "../../src/writer.ts"
import { readTopics } from "../support/kafka-reader.ts"
import { relayConfig, startRelay, withTestTopics } from "../support/relay-harness.ts"
import { sqlLayer, testDatabase } from "../support/test-database.ts"

interface OutboxRow {
  readonly id: string
  readonly event_id: string
  readonly dedup_key: string
  readonly event_type: string
  readonly aggregate_key: string | null
  readonly payload: string
  readonly headers: string
  readonly request_id: string | null
  readonly traceparent: string | null
}

const readOutbox = (url: string) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    return yield* sql<OutboxRow>`
      SELECT id::text, event_id::text, dedup_key, event_type, aggregate_key, payload::text AS payload, headers::text AS headers,
             request_id, traceparent
        FROM outbox_event ORDER BY id`
  }).pipe(Effect.provide(sqlLayer(url)), Effect.orDie)

const waitUntilSent = (url: string, total: number) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    for (let i = 0; i < 600; i++) {
      const [row] = yield* sql<{ sent: number }>`SELECT count(*) FILTER (WHERE status = 'SENT')::int AS sent FROM outbox_event`
      if (row!.sent >= total) return
      yield* Effect.sleep("100 millis")
    }
    return yield* Effect.die(new Error(`not all ${total} events were relayed within 60 s`))
  }).pipe(Effect.provide(sqlLayer(url)))

class Boom extends Schema.TaggedError<Boom>()("Boom", {}) {}

/** Records every span, so a test can check parents without an exporter. */
const recordingTracer = () => {
  const spans: Array<Tracer.NativeSpan> = []
  const tracer = Tracer.make({
    span(options) {
      const span = new Tracer.NativeSpan(options)
      spans.push(span)
      return span
    },
  })
  return { spans, layer: Layer.succeed(Tracer.Tracer, tracer) }
}

describe("writer", () => {
  it.live(
    "refuses an event larger than the relay could publish, before it reaches the table, with a limit the caller can change",
    () =>
      Effect.gen(function* () {
        const db = yield* testDatabase()
        const big = { eventType: "search_click", dedupKey: "too-big", payload: { blob: "x".repeat(1_000_001) } }
        const refused = yield* writeEvent(big).pipe(Effect.flip, Effect.provide(sqlLayer(db.url)))
        expect(refused).toBeInstanceOf(InvalidOutboxEvent)
        expect(refused.message).toContain("over the limit of 1000000")
        const headers = { eventType: "search_click", dedupKey: "big-headers", payload: {}, headers: { h: "y".repeat(2_000) } }
        const small = yield* writeEvent(headers).pipe(
          Effect.provideService(MaxEventBytes, 1_000),
          Effect.flip,
          Effect.provide(sqlLayer(db.url)),
        )
        expect(small.message).toContain("over the limit of 1000")
        const plain = yield* Effect.promise(async () => {
          const client = { query: async () => ({ rows: [] }) }
          return writeOutboxEvents(client, [headers], { maxEventBytes: 1_000 }).then(
            () => "written",
            (e: unknown) => (e instanceof InvalidOutboxEvent ? e.message : String(e)),
          )
        })
        expect(plain).toContain("over the limit of 1000")
        // A larger limit lets it through.
        const raised = yield* writeEvent(headers).pipe(Effect.provideService(MaxEventBytes, 4_000), Effect.provide(sqlLayer(db.url)))
        expect(raised._tag).toBe("Inserted")
        expect((yield* readOutbox(db.url)).map((r) => r.dedup_key)).toEqual(["big-headers"])
      }),
    60_000,
  )

  it.live(
    "writes nothing when the caller's transaction rolls back, and the relay publishes only the committed event",
    () =>
      Effect.gen(function* () {
        const db = yield* testDatabase()
        const topics = yield* withTestTopics(["search_click"])
        const rolledBack = yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          return yield* sql
            .withTransaction(
              Effect.gen(function* () {
                const written = yield* writeEvent({ eventType: "search_click", dedupKey: "click-rolled-back", payload: { query: "shoes" } })
                expect(written._tag).toBe("Inserted")
                return yield* new Boom()
              }),
            )
            .pipe(Effect.flip)
        }).pipe(Effect.provide(sqlLayer(db.url)))
        expect(rolledBack._tag).toBe("Boom")
        expect(yield* readOutbox(db.url)).toEqual([])

        const committed = yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          return yield* sql.withTransaction(
            writeEvent({
              eventType: "search_click",
              dedupKey: "click-committed",
              aggregateKey: "session-7",
              payload: { query: "running shoes", position: 2 },
              headers: { tenant: "acme" },
            }),
          )
        }).pipe(Effect.provide(sqlLayer(db.url)))
        expect(committed._tag).toBe("Inserted")

        yield* startRelay(relayConfig(db.url, topics.env))
        yield* waitUntilSent(db.url, 1)
        const messages = yield* readTopics([topics.map.search_click!], { expected: 1 })
        const [row] = yield* readOutbox(db.url)
        expect(messages).toHaveLength(1)
        expect(messages[0]!.key).toBe("session-7")
        expect(JSON.parse(messages[0]!.value!)).toEqual({ query: "running shoes", position: 2 })
        // sql.withTransaction opens a span, so the event carries a traceparent pointing into it.
        expect(row!.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/)
        expect(messages[0]!.headers).toEqual({
          tenant: "acme",
          event_id: row!.event_id,
          dedup_key: "click-committed",
          event_type: "search_click",
          traceparent: row!.traceparent,
        })
        expect(committed).toEqual({ _tag: "Inserted", dedupKey: "click-committed", id: row!.id, eventId: row!.event_id })
      }),
    120_000,
  )

  it.live(
    "treats a repeated dedup_key as one event: the repeat says Duplicate and Kafka gets the first version once",
    () =>
      Effect.gen(function* () {
        const db = yield* testDatabase()
        const topics = yield* withTestTopics(["search_click"])
        const { first, again, batch } = yield* Effect.gen(function* () {
          const first = yield* writeEvent({ eventType: "search_click", dedupKey: "click-1", payload: { v: 1 } })
          const again = yield* writeEvent({ eventType: "search_click", dedupKey: "click-1", payload: { v: 2 } })
          const batch = yield* writeEvents([
            { eventType: "search_click", dedupKey: "click-2", payload: { v: 3 } },
            { eventType: "search_click", dedupKey: "click-1", payload: { v: 4 } },
            { eventType: "search_click", dedupKey: "click-2", payload: { v: 5 } },
            { eventType: "search_click", dedupKey: "click-3", payload: null },
          ])
          return { first, again, batch }
        }).pipe(Effect.provide(sqlLayer(db.url)))
        expect(first._tag).toBe("Inserted")
        expect(again).toEqual({ _tag: "Duplicate", dedupKey: "click-1" })
        expect(batch.map((r: WriteResult) => `${r._tag}:${r.dedupKey}`)).toEqual([
          "Inserted:click-2",
          "Duplicate:click-1",
          "Duplicate:click-2",
          "Inserted:click-3",
        ])
        const rows = yield* readOutbox(db.url)
        expect(rows.map((r) => [r.dedup_key, JSON.parse(r.payload)])).toEqual([
          ["click-1", { v: 1 }],
          ["click-2", { v: 3 }],
          ["click-3", null],
        ])

        yield* startRelay(relayConfig(db.url, topics.env))
        yield* waitUntilSent(db.url, 3)
        const messages = yield* readTopics([topics.map.search_click!], { expected: 3 })
        expect(messages.map((m) => [m.headers.dedup_key, m.value]).sort()).toEqual([
          ["click-1", '{"v": 1}'],
          ["click-2", '{"v": 3}'],
          ["click-3", "null"],
        ])
      }),
    120_000,
  )

  it.live(
    "captures traceparent from the caller's span and request_id from RequestId, a log annotation, or the input",
    () =>
      Effect.gen(function* () {
        const db = yield* testDatabase()
        const topics = yield* withTestTopics(["search_click"])
        const tracing = recordingTracer()
        const callerSpan = yield* Effect.gen(function* () {
          yield* writeEvent({ eventType: "search_click", dedupKey: "traced", payload: {} }).pipe(
            Effect.provideService(RequestId, "req-ref"),
          )
          yield* writeEvent({ eventType: "search_click", dedupKey: "annotated", payload: {} }).pipe(
            Effect.annotateLogs({ request_id: "req-log" }),
          )
          yield* writeEvent({ eventType: "search_click", dedupKey: "explicit", payload: {}, requestId: "req-input" }).pipe(
            Effect.provideService(RequestId, "req-ref"),
          )
          yield* writeEvent({ eventType: "search_click", dedupKey: "untraced-propagation", payload: {} }).pipe(
            Effect.provideService(Tracer.DisablePropagation, true),
          )
          return yield* Effect.currentSpan
        }).pipe(Effect.withSpan("checkout"), Effect.provide(Layer.merge(sqlLayer(db.url), tracing.layer)))
        // Outside any span: no trace is made up.
        yield* writeEvent({ eventType: "search_click", dedupKey: "no-span", payload: {} }).pipe(Effect.provide(sqlLayer(db.url)))

        const rows = new Map((yield* readOutbox(db.url)).map((r) => [r.dedup_key, r]))
        const writeSpans = tracing.spans.filter((s) => s.name === "OutboxWriter.write")
        const first = writeSpans[0]!
        expect(first.kind).toBe("producer")
        expect(first.parent._tag === "Some" && first.parent.value.spanId).toBe(callerSpan.spanId)
        expect(rows.get("traced")!.traceparent).toBe(`00-${callerSpan.traceId}-${first.spanId}-01`)
        expect(rows.get("traced")!.request_id).toBe("req-ref")
        expect(rows.get("annotated")!.request_id).toBe("req-log")
        expect(rows.get("explicit")!.request_id).toBe("req-input")
        expect(rows.get("untraced-propagation")!.traceparent).toBeNull()
        expect(rows.get("no-span")!.traceparent).toBeNull()
        expect(rows.get("no-span")!.request_id).toBeNull()

        yield* startRelay(relayConfig(db.url, topics.env))
        yield* waitUntilSent(db.url, 5)
        const messages = yield* readTopics([topics.map.search_click!], { expected: 5 })
        const traced = messages.find((m) => m.headers.dedup_key === "traced")!
        expect(traced.headers.traceparent).toBe(rows.get("traced")!.traceparent)
        expect(traced.headers.request_id).toBe("req-ref")
      }),
    120_000,
  )

  it.live(
    "rejects invalid events with InvalidOutboxEvent naming each problem, and writes none of the batch",
    () =>
      Effect.gen(function* () {
        const db = yield* testDatabase()
        const error = yield* writeEvents([
          { eventType: "search_click", dedupKey: "ok", payload: { fine: true } },
          { eventType: "", dedupKey: "  ", payload: undefined },
          { eventType: "search_click", dedupKey: "fn", payload: () => 1 },
          { eventType: "search_click", dedupKey: "nan", payload: { n: Number.NaN } },
          { eventType: "search_click", dedupKey: "hdr", payload: {}, headers: { event_id: "spoofed" } },
          { eventType: "search_click", dedupKey: "tp", payload: {}, traceparent: "not-a-traceparent" },
        ]).pipe(Effect.flip, Effect.provide(sqlLayer(db.url)))
        expect(error).toBeInstanceOf(InvalidOutboxEvent)
        expect((error as InvalidOutboxEvent).problems.map((p) => `${p.index}:${p.field}`)).toEqual([
          "1:eventType",
          "1:dedupKey",
          "1:payload",
          "2:payload",
          "3:payload",
          "4:headers",
          "5:traceparent",
        ])
        expect(yield* readOutbox(db.url)).toEqual([])
      }),
    60_000,
  )

  it.live(
    "a typed writer encodes each payload with its event type's schema and refuses other types",
    () =>
      Effect.gen(function* () {
        const db = yield* testDatabase()
        const writer = makeOutboxWriter({
          search_click: Schema.Struct({ query: Schema.String, at: Schema.DateTimeUtcFromString }),
        })
        const at = DateTime.makeUnsafe("2025-01-02T03:04:05.000Z")
        const { ok, wrongShape, unknownType } = yield* Effect.gen(function* () {
          const ok = yield* writer.write({ eventType: "search_click", dedupKey: "typed-1", payload: { query: "boots", at } })
          const wrongShape = yield* writer
            // @ts-expect-error the payload does not match the schema
            .write({ eventType: "search_click", dedupKey: "typed-2", payload: { query: 42, at } })
            .pipe(Effect.flip)
          // @ts-expect-error the writer has no schema for this type
          const unknownType = yield* writer.write({ eventType: "search_dwell", dedupKey: "typed-3", payload: {} }).pipe(Effect.flip)
          return { ok, wrongShape, unknownType }
        }).pipe(Effect.provide(sqlLayer(db.url)))
        expect(ok._tag).toBe("Inserted")
        expect(wrongShape.message).toContain("does not match its event type's schema")
        expect(unknownType.message).toContain('"search_dwell" has no payload schema')
        const rows = yield* readOutbox(db.url)
        expect(rows.map((r) => [r.dedup_key, JSON.parse(r.payload)])).toEqual([
          ["typed-1", { query: "boots", at: "2025-01-02T03:04:05.000Z" }],
        ])
      }),
    60_000,
  )

  it.live(
    "the plain client form runs the same statement on any query(text, values) client",
    () =>
      Effect.gen(function* () {
        const db = yield* testDatabase()
        const results = yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          const context = yield* Effect.context<never>()
          // A node-postgres-shaped client over the test's connection.
          const client = {
            query: (text: string, values: ReadonlyArray<unknown>) =>
              Effect.runPromiseWith(context)(sql.unsafe(text, values)).then((rows) => ({ rows })),
          }
          const first = yield* Effect.promise(() =>
            writeOutboxEvents(client, [{ eventType: "search_click", dedupKey: "pg-1", aggregateKey: "k", payload: [1, 2] }]),
          )
          const second = yield* Effect.promise(() =>
            writeOutboxEvents(client, [
              { eventType: "search_click", dedupKey: "pg-1", payload: [3] },
              { eventType: "search_click", dedupKey: "pg-2", payload: "text" },
            ]),
          )
          const invalid = yield* Effect.promise(() =>
            writeOutboxEvents(client, [{ eventType: "search_click", dedupKey: "", payload: 1 }]).then(
              () => undefined,
              (e: unknown) => e,
            ),
          )
          return { first, second, invalid }
        }).pipe(Effect.provide(sqlLayer(db.url)))
        expect(results.first.map((r) => r._tag)).toEqual(["Inserted"])
        expect(results.second.map((r) => r._tag)).toEqual(["Duplicate", "Inserted"])
        expect(results.invalid).toBeInstanceOf(InvalidOutboxEvent)
        const rows = yield* readOutbox(db.url)
        expect(rows.map((r) => [r.dedup_key, r.aggregate_key, JSON.parse(r.payload)])).toEqual([
          ["pg-1", "k", [1, 2]],
          ["pg-2", null, "text"],
        ])
      }),
    60_000,
  )
})
