/**
 * The relay's HTTP API over real HTTP: liveness and readiness follow a broker this test
 * stops and starts, pause/resume gate the claims, the admin API wants its bearer token,
 * and dead letters can be listed and replayed, with bad input answered by 400.
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer, Stream } from "effect"
import { SqlClient } from "effect/sql"
import { ensureTopics } from "../../src/kafka/topics.ts"
import { readTopics } from "../support/kafka-reader.ts"
import { openStore, relayConfig, withTestTopics } from "../support/relay-harness.ts"
import { eventually, type HttpAnswer, ownBroker, request, startRun } from "../support/run-harness.ts"
import { sqlLayer, testDatabase } from "../support/test-database.ts"

const TOKEN = "http-api-test-admin-token-0123"
const auth = { authorization: `Bearer ${TOKEN}` }
const field = (answer: HttpAnswer, name: string) => (answer.body as Record<string, unknown>)[name]

const sqlClient = (url: string) => Effect.map(Layer.build(sqlLayer(url)), (context) => Context.get(context, SqlClient.SqlClient))

interface RowState {
  readonly status: string
  readonly attempts: number
  readonly locked_by: string | null
}

describe("HTTP API", () => {
  it.live(
    "/healthz and /readyz answer 200 while PostgreSQL and Kafka are up, 503 once the broker is stopped, and 200 again when it is back",
    () =>
      Effect.gen(function* () {
        const broker = yield* ownBroker
        const db = yield* testDatabase()
        const topic = `health-${Date.now()}-search_click`
        yield* ensureTopics([broker.bootstrap], [topic, `${topic}-dlq`]).pipe(Effect.orDie)
        const config = relayConfig(db.url, {
          KAFKA_BROKERS: broker.bootstrap,
          TOPIC_MAP: JSON.stringify({ search_click: topic }),
          DLQ_TOPIC: `${topic}-dlq`,
          HEALTH_STALL_MS: "3000",
          READY_TIMEOUT_MS: "1000",
          PUBLISH_TIMEOUT_MS: "2000",
          BACKOFF_BASE_MS: "100",
          BACKOFF_MAX_MS: "1000",
        })
        const relay = yield* startRun(config)
        const healthz = request(`${relay.baseUrl}/healthz`)
        const readyz = request(`${relay.baseUrl}/readyz`)

        const up = yield* eventually(healthz, (a) => a.status === 200 && field(a, "status") === "ok", 15_000, "healthz ok")
        expect(up.headers.get("content-type")).toContain("application/json")
        const ready = yield* eventually(readyz, (a) => a.status === 200, 15_000, "readyz 200")
        expect(ready.body).toMatchObject({ status: "ready", checks: { database: { ok: true }, kafka: { ok: true } } })

        yield* broker.stop
        const notReady = yield* eventually(readyz, (a) => a.status === 503, 20_000, "readyz 503 with the broker stopped")
        expect(notReady.body).toMatchObject({ status: "not_ready", checks: { database: { ok: true }, kafka: { ok: false } } })

        // With an event to publish, the loop waits for Kafka and completes no cycle: it is stalled.
        yield* (yield* openStore(config)).append([{ dedupKey: "health-1", eventType: "search_click", payload: {} }])
        const stalled = yield* eventually(healthz, (a) => a.status === 503, 30_000, "healthz 503 while Kafka is away")
        expect(stalled.body).toMatchObject({ status: "stalled", waiting_for_kafka: true })

        yield* broker.start
        yield* eventually(readyz, (a) => a.status === 200, 60_000, "readyz 200 with the broker back")
        const healthy = yield* eventually(healthz, (a) => a.status === 200, 60_000, "healthz 200 with the broker back")
        expect(healthy.body).toMatchObject({ status: "ok", waiting_for_kafka: false })
        const sql = yield* sqlClient(db.url)
        yield* eventually(
          sql<{ status: string }>`SELECT status FROM outbox_event WHERE dedup_key = 'health-1'`.pipe(Effect.orDie),
          (rows) => rows[0]?.status === "SENT",
          60_000,
          "the waiting event SENT once Kafka is back",
        )
      }),
    240_000,
  )

  it.live(
    "POST /admin/pause stops claiming (a new event stays NEW, untouched) and POST /admin/resume relays it",
    () =>
      Effect.gen(function* () {
        const db = yield* testDatabase()
        const topics = yield* withTestTopics(["search_click"])
        const relay = yield* startRun(relayConfig(db.url, { ...topics.env, ADMIN_TOKEN: TOKEN }))
        const sql = yield* sqlClient(db.url)
        const row = sql<RowState>`SELECT status, attempts, locked_by FROM outbox_event WHERE dedup_key = 'paused-1'`.pipe(Effect.orDie)

        const paused = yield* request(`${relay.baseUrl}/admin/pause`, { method: "POST", headers: auth })
        expect(paused.status).toBe(200)
        expect(paused.body).toMatchObject({ paused: true, changed: true })
        expect(field(yield* request(`${relay.baseUrl}/admin/status`, { headers: auth }), "paused")).toBe(true)

        const ignored = yield* relay.events.subscribe
        yield* sql`INSERT INTO outbox_event (dedup_key, event_type, payload) VALUES ('paused-1', 'search_click', '{}'::jsonb)`.pipe(
          Effect.orDie,
        )
        // Two triggers ignored since the insert committed: at least one came after it, and would
        // have claimed it were the relay not paused.
        yield* ignored.pipe(
          Stream.filter((e) => e._tag === "TriggerIgnored"),
          Stream.take(2),
          Stream.runDrain,
          Effect.timeout("10 seconds"),
          Effect.orDie,
        )
        expect(yield* row).toEqual([{ status: "NEW", attempts: 0, locked_by: null }])
        // Paused is alive: the liveness probe must not restart a relay an operator paused.
        const health = yield* request(`${relay.baseUrl}/healthz`)
        expect(health.status).toBe(200)
        expect(health.body).toMatchObject({ paused: true })

        const resumed = yield* request(`${relay.baseUrl}/admin/resume`, { method: "POST", headers: auth })
        expect(resumed.body).toMatchObject({ paused: false, changed: true })
        yield* eventually(row, (rows) => rows[0]?.status === "SENT", 15_000, "paused-1 SENT after resume")
        const messages = yield* readTopics([topics.map.search_click!], { expected: 1 })
        expect(messages.map((m) => m.headers.dedup_key)).toEqual(["paused-1"])
      }),
    120_000,
  )

  it.live(
    "refuses every admin endpoint with 401 without the right bearer token, and has none (404) when ADMIN_TOKEN is not set",
    () =>
      Effect.gen(function* () {
        const db = yield* testDatabase()
        const topics = yield* withTestTopics(["search_click"])
        const guarded = yield* startRun(relayConfig(db.url, { ...topics.env, ADMIN_TOKEN: TOKEN }))
        const endpoints = [
          ["GET", "/admin/status"],
          ["POST", "/admin/pause"],
          ["POST", "/admin/resume"],
          ["GET", "/admin/dead-letters"],
          ["POST", "/admin/replay"],
        ] as const
        const refusals: ReadonlyArray<Record<string, string>> = [
          {},
          { authorization: "Bearer http-api-test-admin-token-0124" },
          { authorization: "Bearer short" },
          { authorization: `Basic ${Buffer.from(`admin:${TOKEN}`).toString("base64")}` },
          { authorization: TOKEN },
          { authorization: `Bearer ${TOKEN} extra` },
        ]
        for (const [method, path] of endpoints) {
          for (const headers of refusals) {
            const answer = yield* request(`${guarded.baseUrl}${path}`, {
              method,
              headers,
              ...(method === "POST" ? { body: '{"all":true}' } : {}),
            })
            expect(answer.status, `${method} ${path} with ${JSON.stringify(headers)}`).toBe(401)
            expect(answer.body).toMatchObject({ error: "unauthorized" })
            expect(answer.headers.get("www-authenticate")).toMatch(/^Bearer/)
          }
        }
        // None of the refused requests did anything: still running, not paused.
        const status = yield* request(`${guarded.baseUrl}/admin/status`, { headers: auth })
        expect(status.status).toBe(200)
        expect(status.body).toMatchObject({ paused: false, kafka_reachable: true, counts: { NEW: 0, SENT: 0, FAILED: 0, DEAD: 0 } })

        const open = yield* startRun(relayConfig(db.url, topics.env))
        for (const [method, path] of endpoints) {
          const answer = yield* request(`${open.baseUrl}${path}`, { method, headers: auth })
          expect(answer.status, `${method} ${path} without ADMIN_TOKEN`).toBe(404)
        }
        expect((yield* request(`${open.baseUrl}/healthz`)).status).toBe(200)
      }),
    120_000,
  )

  it.live(
    "lists and replays dead letters through the admin API (audited as admin-api), and answers bad filters and bodies with 400",
    () =>
      Effect.gen(function* () {
        const db = yield* testDatabase()
        const topics = yield* withTestTopics(["search_click"])
        const relay = yield* startRun(relayConfig(db.url, { ...topics.env, ADMIN_TOKEN: TOKEN }))
        const sql = yield* sqlClient(db.url)
        yield* sql`INSERT INTO outbox_event (dedup_key, event_type, payload) VALUES ('dl-1', 'no_such_type', '{"n":1}'::jsonb)`.pipe(
          Effect.orDie,
        )
        const [dead] = yield* eventually(
          sql<{ id: string; status: string }>`SELECT id::text, status FROM outbox_event WHERE dedup_key = 'dl-1'`.pipe(Effect.orDie),
          (rows) => rows[0]?.status === "DEAD",
          15_000,
          "dl-1 DEAD",
        )
        const get = (query: string) => request(`${relay.baseUrl}/admin/dead-letters${query}`, { headers: auth })
        const replay = (body: string) =>
          request(`${relay.baseUrl}/admin/replay`, { method: "POST", headers: { ...auth, "content-type": "application/json" }, body })

        const listed = yield* get("?event_type=no_such_type&reason=unknown_event_type&since=2020-01-01&limit=5")
        expect(listed.status).toBe(200)
        expect(listed.body).toMatchObject({
          count: 1,
          dead_letters: [{ id: dead!.id, dedup_key: "dl-1", dead_reason: "unknown_event_type" }],
        })
        expect(field(yield* get("?event_type=search_click"), "count")).toBe(0)

        for (const [query, mentions] of [
          ["?limit=0", "limit"],
          ["?limit=abc", "limit"],
          ["?since=yesterday", "since"],
          ["?reason=bogus", "reason"],
          ["?colour=red", "colour"],
        ] as const) {
          const answer = yield* get(query)
          expect(answer.status, query).toBe(400)
          expect(answer.body).toMatchObject({ error: "bad_request" })
          expect(String(field(answer, "message")), query).toContain(mentions)
        }
        for (const body of ["not json", "{}", '{"ids":["abc"]}', '{"all":true,"status":"SENT"}', '{"dedupKeys":["dl-1"]}', "[1]"]) {
          const answer = yield* replay(body)
          expect(answer.status, body).toBe(400)
          expect(answer.body, body).toMatchObject({ error: "bad_request" })
        }

        const dryRun = yield* replay('{"dedup_keys":["dl-1"],"dry_run":true}')
        expect(dryRun.body).toMatchObject({ dry_run: true, count: 1, audit_id: null })
        expect((yield* sql<{ status: string }>`SELECT status FROM outbox_event WHERE id = ${dead!.id}`.pipe(Effect.orDie))[0]?.status).toBe(
          "DEAD",
        )

        const done = yield* replay(JSON.stringify({ ids: [dead!.id], actor: "ops@example.com" }))
        expect(done.status).toBe(200)
        expect(done.body).toMatchObject({ dry_run: false, status: "DEAD", count: 1, events: [{ id: dead!.id }] })
        const audit = yield* sql<{ id: string; actor: string; origin: string; event_ids: ReadonlyArray<string> }>`
          SELECT id::text, actor, origin, event_ids::text[] AS event_ids FROM outbox_replay_audit`.pipe(Effect.orDie)
        expect(audit).toEqual([
          { id: String(field(done, "audit_id")), actor: "ops@example.com", origin: "admin-api", event_ids: [dead!.id] },
        ])
        // Requeued as NEW, claimed again, and (its type still unmapped) dead-lettered a second time.
        const letters = yield* readTopics([topics.dlq], { expected: 2 })
        expect(letters.map((m) => m.headers.dedup_key)).toEqual(["dl-1", "dl-1"])
      }),
    120_000,
  )
})
