/**
 * Traces, end to end: a real OTLP/HTTP endpoint (JSON) runs in the test, the relay
 * publishes an event whose row carries a traceparent, and the exported publish span, the
 * row and the message a real consumer reads back must tell the same story.
 */
import { randomBytes } from "node:crypto"
import { createServer, type IncomingMessage, type ServerResponse } from "node:http"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import { readTopics } from "../support/kafka-reader.ts"
import { type DecodedSpan, decodeTraceRequest } from "../support/otlp-protobuf.ts"
import { openStore, relayConfig, withTestTopics } from "../support/relay-harness.ts"
import { eventually, startRun } from "../support/run-harness.ts"
import { sqlLayer, testDatabase } from "../support/test-database.ts"

interface OtlpAttribute {
  readonly key: string
  readonly value: { readonly stringValue?: string; readonly intValue?: string | number; readonly boolValue?: boolean }
}
interface OtlpSpan {
  readonly traceId: string
  readonly spanId: string
  readonly parentSpanId?: string
  readonly name: string
  readonly kind: number | string
  readonly attributes?: ReadonlyArray<OtlpAttribute>
  readonly links?: ReadonlyArray<{ readonly traceId: string; readonly spanId: string }>
}
interface ExportedSpan {
  readonly span: OtlpSpan
  readonly resource: ReadonlyArray<OtlpAttribute>
}

/** OTLP/JSON ids are hex; tolerate base64 (the protobuf-JSON mapping) too. */
const hex = (id: string | undefined) =>
  id === undefined || id === "" ? "" : /^[0-9a-f]+$/.test(id) ? id : Buffer.from(id, "base64").toString("hex")

const attrs = (list: ReadonlyArray<OtlpAttribute> | undefined): Record<string, unknown> =>
  Object.fromEntries((list ?? []).map((a) => [a.key, a.value.stringValue ?? a.value.intValue ?? a.value.boolValue]))

/** A minimal OTLP/HTTP trace receiver: POST /v1/traces with a JSON body. */
const otlpReceiver = Effect.acquireRelease(
  Effect.callback<{ url: string; spans: Array<ExportedSpan>; close: () => void }>((resume) => {
    const spans: Array<ExportedSpan> = []
    const server = createServer((req: IncomingMessage, res: ServerResponse) => {
      const chunks: Array<Buffer> = []
      req.on("data", (c: Buffer) => chunks.push(c))
      req.on("end", () => {
        if (req.method === "POST" && req.url === "/v1/traces" && (req.headers["content-type"] ?? "").includes("json")) {
          const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as {
            resourceSpans?: ReadonlyArray<{
              resource?: { attributes?: ReadonlyArray<OtlpAttribute> }
              scopeSpans?: ReadonlyArray<{ spans?: ReadonlyArray<OtlpSpan> }>
            }>
          }
          for (const rs of body.resourceSpans ?? [])
            for (const ss of rs.scopeSpans ?? [])
              for (const span of ss.spans ?? []) spans.push({ span, resource: rs.resource?.attributes ?? [] })
          res.writeHead(200, { "content-type": "application/json" }).end("{}")
        } else {
          res.writeHead(415).end()
        }
      })
    })
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      resume(Effect.succeed({ url: `http://127.0.0.1:${port}/v1/traces`, spans, close: () => server.close() }))
    })
  }),
  (receiver) => Effect.sync(receiver.close),
)

describe("tracing", () => {
  it.live(
    "exports a producer span per published event, child of the row's traceparent, and the Kafka traceparent header names that span",
    () =>
      Effect.gen(function* () {
        const receiver = yield* otlpReceiver
        const db = yield* testDatabase()
        const topics = yield* withTestTopics(["search_click"])
        const topic = topics.map.search_click!
        const traceId = randomBytes(16).toString("hex")
        const parentSpanId = randomBytes(8).toString("hex")
        const config = relayConfig(db.url, {
          ...topics.env,
          OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: receiver.url,
          OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "http/json",
        })
        yield* (yield* openStore(config)).append([
          {
            dedupKey: "traced-1",
            eventType: "search_click",
            aggregateKey: "session-7",
            payload: { q: "shoes" },
            requestId: "req-traced-1",
            traceparent: `00-${traceId}-${parentSpanId}-01`,
          },
          { dedupKey: "untraced-1", eventType: "search_click", payload: { q: "hats" }, requestId: "req-untraced-1" },
        ])

        // The relay runs in a scope of its own: closing it flushes the span processor.
        yield* Effect.scoped(
          Effect.gen(function* () {
            yield* startRun(config)
            yield* eventually(
              Effect.gen(function* () {
                const sql = yield* SqlClient.SqlClient
                return yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM outbox_event WHERE status = 'SENT'`
              }).pipe(Effect.provide(sqlLayer(db.url)), Effect.orDie),
              (rows) => rows[0]?.n === 2,
              30_000,
              "both events SENT",
            )
          }),
        )

        const rows = yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          return yield* sql<{ dedup_key: string; event_id: string }>`SELECT dedup_key, event_id::text FROM outbox_event`
        }).pipe(Effect.provide(sqlLayer(db.url)), Effect.orDie)
        const eventId = (key: string) => rows.find((r) => r.dedup_key === key)!.event_id
        const messages = yield* readTopics([topic], { expected: 2 })
        const message = (key: string) => messages.find((m) => m.headers.dedup_key === key)!
        const publishSpan = (key: string) => {
          const found = receiver.spans.filter((s) => attrs(s.span.attributes)["messaging.message.id"] === eventId(key))
          expect(found, `publish spans of ${key}`).toHaveLength(1)
          return found[0]!
        }

        // The traced event: child of the row's traceparent, with the messaging attributes.
        const traced = publishSpan("traced-1")
        expect(hex(traced.span.traceId)).toBe(traceId)
        expect(hex(traced.span.parentSpanId)).toBe(parentSpanId)
        expect([4, "SPAN_KIND_PRODUCER"]).toContain(traced.span.kind)
        expect(traced.span.name).toBe(`publish ${topic}`)
        expect(attrs(traced.span.attributes)).toMatchObject({
          "messaging.system": "kafka",
          "messaging.operation.name": "publish",
          "messaging.destination.name": topic,
          "messaging.message.id": eventId("traced-1"),
          event_id: eventId("traced-1"),
          event_type: "search_click",
          dedup_key: "traced-1",
          request_id: "req-traced-1",
        })
        expect(attrs(traced.resource)["service.name"]).toBe("outbox-relay")
        // The consumer continues the same trace, as a child of the publish span.
        expect(message("traced-1").headers.traceparent).toBe(`00-${traceId}-${hex(traced.span.spanId)}-01`)
        expect(message("traced-1").headers.request_id).toBe("req-traced-1")

        // An event without a traceparent starts a trace of its own, still carried to the consumer.
        const untraced = publishSpan("untraced-1")
        expect(hex(untraced.span.parentSpanId)).toBe("")
        expect(message("untraced-1").headers.traceparent).toBe(`00-${hex(untraced.span.traceId)}-${hex(untraced.span.spanId)}-01`)

        // The one Kafka request that carried both links to each event's span.
        const sends = receiver.spans.filter((s) => s.span.name === "send")
        const linked = new Set(sends.flatMap((s) => (s.span.links ?? []).map((l) => hex(l.spanId))))
        expect(linked).toContain(hex(traced.span.spanId))
        expect(linked).toContain(hex(untraced.span.spanId))
      }),
    120_000,
  )
  it.live(
    "exports over OTLP/HTTP protobuf by default (the spec's default), with OTEL_EXPORTER_OTLP_HEADERS on each request",
    () =>
      Effect.gen(function* () {
        const received = yield* Effect.acquireRelease(
          Effect.callback<{ url: string; spans: Array<DecodedSpan>; requests: Array<IncomingMessage["headers"]>; close: () => void }>(
            (resume) => {
              const spans: Array<DecodedSpan> = []
              const requests: Array<IncomingMessage["headers"]> = []
              const server = createServer((req: IncomingMessage, res: ServerResponse) => {
                const chunks: Array<Buffer> = []
                req.on("data", (c: Buffer) => chunks.push(c))
                req.on("end", () => {
                  if (req.method === "POST" && req.url === "/v1/traces" && req.headers["content-type"] === "application/x-protobuf") {
                    requests.push(req.headers)
                    spans.push(...decodeTraceRequest(Buffer.concat(chunks)))
                    // An empty ExportTraceServiceResponse.
                    res.writeHead(200, { "content-type": "application/x-protobuf" }).end()
                  } else {
                    res.writeHead(415).end()
                  }
                })
              })
              server.listen(0, "127.0.0.1", () => {
                const address = server.address()
                const port = typeof address === "object" && address !== null ? address.port : 0
                resume(Effect.succeed({ url: `http://127.0.0.1:${port}`, spans, requests, close: () => server.close() }))
              })
            },
          ),
          (r) => Effect.sync(r.close),
        )
        const db = yield* testDatabase()
        const topics = yield* withTestTopics(["search_click"])
        const config = relayConfig(db.url, {
          ...topics.env,
          OTEL_EXPORTER_OTLP_ENDPOINT: received.url,
          OTEL_EXPORTER_OTLP_HEADERS: "authorization=Bearer%20proto-test",
        })
        yield* (yield* openStore(config)).append([
          { dedupKey: "proto-1", eventType: "search_click", payload: { q: "boots" }, requestId: "req-proto-1" },
        ])
        yield* Effect.scoped(
          Effect.gen(function* () {
            yield* startRun(config)
            yield* eventually(
              Effect.gen(function* () {
                const sql = yield* SqlClient.SqlClient
                return yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM outbox_event WHERE status = 'SENT'`
              }).pipe(Effect.provide(sqlLayer(db.url)), Effect.orDie),
              (rows) => rows[0]?.n === 1,
              30_000,
              "the event SENT",
            )
          }),
        )
        const publish = received.spans.filter((s) => s.attributes.request_id === "req-proto-1")
        expect(publish).toHaveLength(1)
        expect(publish[0]).toMatchObject({
          name: `publish ${topics.map.search_click}`,
          kind: 4,
          attributes: { dedup_key: "proto-1", event_type: "search_click", "outbox.outcome": "sent" },
        })
        expect(publish[0]!.traceId).toMatch(/^[0-9a-f]{32}$/)
        expect(received.requests.every((h) => h.authorization === "Bearer proto-test")).toBe(true)
      }),
    120_000,
  )
})
