/**
 * Every event's story in a real tracing backend: Zipkin server (from Maven Central, started
 * here on a free port) receives the spans of a writer service, the relay (its zipkin
 * exporter) and a consumer service. Searching Zipkin by request_id must find one trace per
 * event, telling writer → relay → consumer, through a retry, a dead letter before any send,
 * a DLQ refusal and a replay; log lines about an event must lead to that trace. And a
 * backend that answers 500 must show in the relay's log, its counter and /readyz, without
 * making it unready.
 */
import { writeFileSync } from "node:fs"
import { createServer } from "node:http"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Layer, Scope } from "effect"
import { SqlClient } from "effect/sql"
import { applySearchClick, SearchClick } from "../../examples/search-clicks-projection/projection.ts"
import { makeIdempotentConsumer } from "../../src/consumer.ts"
import { Kafka } from "../../src/kafka/kafkajs.ts"
import { ensureTopics } from "../../src/kafka/topics.ts"
import { writeEvent } from "../../src/writer.ts"
import { brokers, projectionDatabase } from "../support/consumer-harness.ts"
import { readTopics } from "../support/kafka-reader.ts"
import { relayConfig, withTestTopics } from "../support/relay-harness.ts"
import { eventually, request, startRun } from "../support/run-harness.ts"
import { sqlLayer, testDatabase } from "../support/test-database.ts"
import { traceById, tracesTagged, type ZipkinServer, type ZipkinSpan, zipkinServer, zipkinTracer } from "../support/zipkin.ts"

// The batch span processor reads this at construction: export within a fraction of a second.
process.env.OTEL_BSP_SCHEDULE_DELAY = "200"

const TOKEN = "tracing-backend-admin-token-01"

/** The relay's JSON log lines, read from stdout while the test runs (they still reach the terminal). */
const captureLogLines = Effect.acquireRelease(
  Effect.sync(() => {
    const lines: Array<Record<string, unknown>> = []
    const original = process.stdout.write.bind(process.stdout)
    process.stdout.write = ((chunk: string | Uint8Array, ...rest: Array<never>) => {
      for (const text of String(chunk).split("\n")) {
        if (!text.startsWith('{"timestamp"')) continue
        try {
          lines.push(JSON.parse(text) as Record<string, unknown>)
        } catch {
          // Not one of the relay's lines.
        }
      }
      return original(chunk, ...rest)
    }) as typeof process.stdout.write
    const restore = () => {
      process.stdout.write = original
    }
    return { lines, restore }
  }),
  (capture) => Effect.sync(capture.restore),
)

/** A topic created with a max.message.bytes of its own (the broker refuses larger records). */
const createLimitedTopic = (topic: string, maxMessageBytes: number) =>
  Effect.promise(async () => {
    const admin = new Kafka({ clientId: "tracing-backend-admin", brokers: brokers(), logLevel: 1 }).admin()
    await admin.connect()
    try {
      await admin.createTopics({
        waitForLeaders: true,
        topics: [{ topic, numPartitions: 1, configEntries: [{ name: "max.message.bytes", value: String(maxMessageBytes) }] }],
      })
    } finally {
      await admin.disconnect()
    }
  })

interface OutboxRow {
  readonly dedup_key: string
  readonly status: string
  readonly attempts: number
  readonly dead_reason: string | null
  readonly event_id: string
  readonly traceparent: string | null
}

const readRows = (url: string) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    return yield* sql<OutboxRow>`SELECT dedup_key, status, attempts, dead_reason, event_id::text, traceparent FROM outbox_event ORDER BY id`
  }).pipe(Effect.provide(sqlLayer(url)), Effect.orDie)

const rowOf = (rows: ReadonlyArray<OutboxRow>, key: string) => rows.find((r) => r.dedup_key === key)

/** The one trace Zipkin finds for a request id, once it holds at least `minSpans` spans matching `ready`. */
const traceOf = (zipkin: ZipkinServer, requestId: string, ready: (spans: ReadonlyArray<ZipkinSpan>) => boolean) =>
  Effect.map(
    eventually(
      tracesTagged(zipkin, `request_id=${requestId}`),
      (traces) => traces.length === 1 && ready(traces[0]!),
      30_000,
      `Zipkin finds one complete trace for request_id=${requestId}`,
    ),
    (traces) => traces[0]!,
  )

const service = (span: ZipkinSpan) => span.localEndpoint?.serviceName
const relaySpans = (trace: ReadonlyArray<ZipkinSpan>) => trace.filter((s) => service(s) === "outbox-relay")
const withTag = (trace: ReadonlyArray<ZipkinSpan>, key: string, value?: string) =>
  trace.filter((s) => s.tags?.[key] !== undefined && (value === undefined || s.tags[key] === value))

/** The writer service: each event written in a request's span, as a checkout service would. */
const writeAsService = (
  zipkin: ZipkinServer,
  url: string,
  event: { dedupKey: string; eventType: string; requestId: string; payload: unknown },
) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    yield* sql.withTransaction(writeEvent({ ...event, aggregateKey: event.dedupKey })).pipe(Effect.withSpan(`handle ${event.requestId}`))
  }).pipe(Effect.provide(Layer.merge(sqlLayer(url), zipkinTracer(zipkin, "checkout-service"))), Effect.orDie)

/** The projection consumer, traced to Zipkin as its own service. */
const startTracedConsumer = (zipkin: ZipkinServer, url: string, topic: string, deadLetterTopic: string) =>
  Effect.gen(function* () {
    const scope = yield* Scope.make()
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    const context = yield* Layer.buildWithScope(Layer.merge(sqlLayer(url), zipkinTracer(zipkin, "projection-service")), scope)
    return yield* makeIdempotentConsumer({
      groupId: `traced-${topic}`,
      topics: [topic],
      payload: SearchClick,
      handler: applySearchClick,
      deadLetterTopic,
      fromBeginning: true,
      cleanupInterval: "1 hour",
      consumerConfig: { sessionTimeout: 10_000, heartbeatInterval: 500, maxWaitTimeInMs: 200 },
      kafka: { clientId: `traced-consumer-${topic}`, brokers: brokers(), logLevel: 1 },
    }).pipe(Effect.provideContext(context), Scope.provide(scope), Effect.orDie)
  })

describe("traces in a real backend (Zipkin)", () => {
  it.live(
    "Zipkin finds each event's trace by request_id: writer → relay → consumer, a retry, a dead letter before any send, a DLQ refusal and a replay; log lines carry the event's trace",
    () =>
      Effect.gen(function* () {
        const zipkin = yield* zipkinServer
        const logs = yield* captureLogLines
        const db = yield* testDatabase()
        const inbox = yield* projectionDatabase
        const topics = yield* withTestTopics(["search_click"])
        const clicks = topics.map.search_click!
        // job_run_event maps to a topic created only after its first attempt failed: a retry.
        const lateTopic = `${clicks}-late`
        const tinyDlq = `${topics.dlq}-tiny`
        yield* createLimitedTopic(tinyDlq, 100)
        const run = Math.random().toString(36).slice(2, 8)
        const req = (name: string) => `req-${name}-${run}`
        const env = {
          ...topics.env,
          TOPIC_MAP: JSON.stringify({ ...topics.map, job_run_event: lateTopic }),
          OTEL_TRACES_EXPORTER: "zipkin",
          OTEL_EXPORTER_ZIPKIN_ENDPOINT: zipkin.spansUrl,
          KAFKA_AUTO_CREATE_TOPICS: "false",
          BACKOFF_BASE_MS: "300",
          LOG_FORMAT: "json",
          LOG_LEVEL: "info",
          SENT_LOG_LEVEL: "info",
          ADMIN_TOKEN: TOKEN,
        }
        const write = (dedupKey: string, eventType: string, requestId: string) =>
          writeAsService(zipkin, db.url, { dedupKey, eventType, requestId, payload: { query: dedupKey, resultId: "r-1", position: 1 } })
        const rowsUntil = (what: string, done: (rows: ReadonlyArray<OutboxRow>) => boolean) =>
          eventually(readRows(db.url), done, 60_000, what)

        // 1. A dead-letter topic that refuses every record: the dead letter is refused whole and trimmed.
        yield* Effect.scoped(
          Effect.gen(function* () {
            yield* startRun(relayConfig(db.url, { ...env, DLQ_TOPIC: tinyDlq }))
            yield* write("refused", "no_such_type", req("refused"))
            yield* rowsUntil(
              "the refused dead letter is DEAD dlq_rejected",
              (rows) => rowOf(rows, "refused")?.dead_reason === "dlq_rejected",
            )
          }),
        )

        // 2. The normal dead-letter topic: sent and consumed, retried, dead before any send, replayed.
        yield* Effect.scoped(
          Effect.gen(function* () {
            yield* startTracedConsumer(zipkin, inbox.url, clicks, topics.dlq)
            const relay = yield* startRun(relayConfig(db.url, env))
            yield* write("ok", "search_click", req("ok"))
            yield* write("retry", "job_run_event", req("retry"))
            yield* write("dead", "no_such_type", req("dead"))
            yield* rowsUntil("the retried event failed once", (rows) => (rowOf(rows, "retry")?.attempts ?? 0) >= 1)
            yield* ensureTopics(brokers(), [lateTopic]).pipe(Effect.orDie)
            const replayed = yield* request(`${relay.baseUrl}/admin/replay`, {
              method: "POST",
              headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json", "x-request-id": req("replay") },
              body: JSON.stringify({ dedup_keys: ["refused"], actor: "tracing-test" }),
            })
            expect(replayed.status).toBe(200)
            yield* rowsUntil(
              "sent, retried and sent, dead, and the replay dead again on the normal dead-letter topic",
              (rows) =>
                rowOf(rows, "ok")?.status === "SENT" &&
                rowOf(rows, "retry")?.status === "SENT" &&
                rowOf(rows, "dead")?.dead_reason === "unknown_event_type" &&
                rowOf(rows, "refused")?.dead_reason === "unknown_event_type",
            )
          }),
        )
        const rows = yield* readRows(db.url)
        const letters = yield* readTopics([topics.dlq], { expected: 2 })
        const letterOf = (key: string) => letters.find((m) => m.headers.dedup_key === key)

        // Sent and consumed: writer → relay → consumer, one trace, parent to child.
        const ok = yield* traceOf(zipkin, req("ok"), (t) => t.some((s) => service(s) === "projection-service"))
        const writerSpanIds = new Set(ok.filter((s) => service(s) === "checkout-service").map((s) => s.id))
        expect(writerSpanIds.size).toBeGreaterThan(0)
        const [publish] = relaySpans(ok).filter((s) => s.name === `publish ${clicks}`)
        expect(publish, "the relay's publish span").toBeDefined()
        expect(writerSpanIds.has(publish!.parentId ?? "")).toBe(true)
        expect(publish!.tags).toMatchObject({ request_id: req("ok"), "outbox.outcome": "sent", event_type: "search_click" })
        const [consumed] = ok.filter((s) => service(s) === "projection-service" && s.kind === "CONSUMER")
        expect(consumed!.parentId).toBe(publish!.id)
        expect(consumed!.tags).toMatchObject({
          request_id: req("ok"),
          event_type: "search_click",
          dedup_key: "ok",
          "outbox.outcome": "applied",
          "outbox.attempt": "1",
        })

        // A retry: a failed attempt's error span, then the sent one, both in the event's trace.
        const retry = yield* traceOf(zipkin, req("retry"), (t) => withTag(relaySpans(t), "outbox.outcome", "sent").length === 1)
        const retried = withTag(relaySpans(retry), "outbox.outcome", "failed")
        expect(retried.length).toBeGreaterThanOrEqual(1)
        expect(retried.every((s) => s.tags?.error !== undefined)).toBe(true)

        // Dead before any send: a span with the reason, child of the writer, named by its dead letter.
        const dead = yield* traceOf(zipkin, req("dead"), (t) => withTag(relaySpans(t), "outbox.outcome", "dead").length === 1)
        const [deadSpan] = withTag(relaySpans(dead), "outbox.outcome", "dead")
        expect(deadSpan!.tags).toMatchObject({ "outbox.dead_reason": "unknown_event_type", request_id: req("dead") })
        expect(deadSpan!.tags?.error).toBeDefined()
        expect(rowOf(rows, "dead")!.traceparent).toContain(deadSpan!.traceId)
        expect(letterOf("dead")?.headers.traceparent).toBe(`00-${deadSpan!.traceId}-${deadSpan!.id}-01`)
        // Its ERROR line leads to that span.
        const deadLine = logs.lines.find((l) => l.message === "event dead-lettered" && l.dedup_key === "dead")
        expect(deadLine).toMatchObject({ trace_id: deadSpan!.traceId, span_id: deadSpan!.id, request_id: req("dead") })

        // The DLQ refusal, then the replay: a new span in the original trace, with the replay's request id.
        const refused = yield* traceOf(zipkin, req("refused"), (t) => withTag(relaySpans(t), "outbox.outcome", "dead").length === 2)
        const refusedDead = withTag(relaySpans(refused), "outbox.outcome", "dead")
        expect(refusedDead.map((s) => s.tags?.["outbox.dead_reason"]).sort()).toEqual(["dlq_rejected", "unknown_event_type"])
        expect(refusedDead.find((s) => s.tags?.["outbox.dead_reason"] === "dlq_rejected")!.tags).toMatchObject({
          "outbox.dead_letter": "refused",
        })
        const [replaySpan] = withTag(refused, "outbox.replay.request_id", req("replay"))
        expect(replaySpan, "the replay's span in the original trace").toBeDefined()
        expect(letterOf("refused")?.headers.traceparent).toContain(refused[0]!.traceId)
        // The replay is found by its own request id too.
        expect((yield* tracesTagged(zipkin, `outbox.replay.request_id=${req("replay")}`)).map((t) => t[0]!.traceId)).toEqual([
          refused[0]!.traceId,
        ])

        // Every error Zipkin shows for the relay lands on an event: its trace names a request id.
        const errors = yield* tracesTagged(zipkin, "error")
        const relayErrors = errors.filter((t) => t.some((s) => service(s) === "outbox-relay" && s.tags?.error !== undefined))
        expect(relayErrors.length).toBeGreaterThan(0)
        for (const trace of relayErrors) {
          expect(
            trace.some((s) => s.tags?.request_id !== undefined || s.tags?.["outbox.request_ids"] !== undefined),
            `error trace ${trace[0]!.traceId} names its events`,
          ).toBe(true)
        }

        // The relay's postgres spans name the database's real address.
        const pgSpans = (yield* tracesTagged(zipkin, "db.system.name=postgresql"))
          .flat()
          .filter((s) => service(s) === "outbox-relay" && s.tags?.["db.system.name"] === "postgresql")
        expect(pgSpans.length).toBeGreaterThan(0)
        for (const span of pgSpans) expect(span.tags?.["server.address"]).toBe("127.0.0.1")

        // docs/tracing-example.json is this trace, as Zipkin returns it (TRACE_SAMPLE_OUT=path writes it).
        if (process.env.TRACE_SAMPLE_OUT !== undefined) {
          writeFileSync(process.env.TRACE_SAMPLE_OUT, `${JSON.stringify(yield* traceById(zipkin, publish!.traceId), null, 2)}\n`)
        }
      }),
    300_000,
  )

  it.live(
    "a tracing backend answering 500 shows in a WARN line with its answer, in outbox_trace_exports_total and /readyz, and relaying goes on",
    () =>
      Effect.gen(function* () {
        const logs = yield* captureLogLines
        const failing = yield* Effect.acquireRelease(
          Effect.callback<{ url: string; close: () => void }>((resume) => {
            const server = createServer((req, res) => {
              req.resume()
              req.on("end", () => res.writeHead(500, { "content-type": "text/plain" }).end("storage is full"))
            })
            server.listen(0, "127.0.0.1", () => {
              const address = server.address()
              const port = typeof address === "object" && address !== null ? address.port : 0
              resume(Effect.succeed({ url: `http://127.0.0.1:${port}/api/v2/spans`, close: () => server.close() }))
            })
          }),
          (s) => Effect.sync(s.close),
        )
        const db = yield* testDatabase()
        const topics = yield* withTestTopics(["search_click"])
        const relay = yield* startRun(
          relayConfig(db.url, {
            ...topics.env,
            OTEL_TRACES_EXPORTER: "zipkin",
            OTEL_EXPORTER_ZIPKIN_ENDPOINT: failing.url,
            LOG_FORMAT: "json",
          }),
        )
        for (const key of ["a", "b", "c"]) {
          yield* writeEvent({
            dedupKey: `failing-${key}`,
            eventType: "search_click",
            payload: { key },
            requestId: `req-failing-${key}`,
          }).pipe(Effect.provide(sqlLayer(db.url)), Effect.orDie)
        }
        yield* eventually(
          readRows(db.url),
          (rows) => rows.length === 3 && rows.every((r) => r.status === "SENT"),
          30_000,
          "every event SENT while spans cannot be exported",
        )
        const metrics = yield* eventually(
          request(`${relay.baseUrl}/metrics`),
          (a) => /outbox_trace_exports_total\{outcome="failure"\} [1-9]/.test(a.text),
          30_000,
          "a failed export counted",
        )
        expect(metrics.text).toMatch(/outbox_trace_spans_dropped_total\{reason="export_failed"\} [1-9]/)
        const warnings = logs.lines.filter((l) => l.message === "span export failed; these spans are lost (said at most once a minute)")
        // At most one a minute, however many exports failed.
        expect(warnings).toHaveLength(1)
        expect(warnings[0]).toMatchObject({ level: "warn", exporter: "zipkin", endpoint: failing.url })
        expect(String(warnings[0]!.error)).toContain("500")
        const ready = yield* request(`${relay.baseUrl}/readyz`)
        expect(ready.status).toBe(200)
        expect(ready.body).toMatchObject({ status: "ready", tracing: { exporter: "zipkin", state: "failing" } })
      }),
    120_000,
  )
})
