/** A backlog drained by 1..n relay processes: events/s from "relay started" to the last SENT, and what it cost. */
import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import { type BenchEnv, sqlLayer } from "../support/bench-env.ts"
import { processCost, startRelay } from "../support/relay-process.ts"
import { seedRows } from "../support/seed.ts"

export interface DrainResult {
  readonly events: number
  readonly instances: number
  readonly seconds: number
  readonly eventsPerSecond: number
  readonly cpuMicrosPerEvent: number
  readonly peakRssMb: number
}

export const relayEnv = (env: BenchEnv, extra: Record<string, string> = {}) => ({
  DATABASE_URL: env.databaseUrl,
  KAFKA_BROKERS: env.brokers,
  TOPIC_MAP: JSON.stringify(env.topicMap),
  DLQ_TOPIC: env.dlqTopic,
  ...extra,
})

/** Waits until no row is pending, polling over one connection. */
export const waitDrained = (url: string, timeoutMs: number) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const deadline = Date.now() + timeoutMs
    for (;;) {
      // The first pending row by id, which the partial pending index answers at once: a count
      // (or an EXISTS the planner turns into a sequential scan past the SENT history) every
      // poll would cost PostgreSQL the CPU the relay under test needs.
      const rows = yield* sql`SELECT id FROM outbox_event WHERE status IN ('NEW', 'FAILED') ORDER BY id LIMIT 1`
      if (rows.length === 0) return
      if (Date.now() > deadline) return yield* Effect.fail(new Error(`rows still pending after ${timeoutMs} ms`))
      yield* Effect.sleep("100 millis")
    }
  }).pipe(Effect.provide(sqlLayer(url, 1)))

const lastSentAt = (url: string) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const [row] = yield* sql<{ ms: number; sent: number }>`
      SELECT (extract(epoch FROM max(sent_at)) * 1000)::float8 AS ms, count(*)::int AS sent
        FROM outbox_event WHERE status = 'SENT' AND kafka_topic <> 'history'`
    return row!
  }).pipe(Effect.provide(sqlLayer(url, 1)))

export const drain = (env: BenchEnv, options: { events: number; instances: number; seed?: boolean; relay?: Record<string, string> }) =>
  Effect.gen(function* () {
    if (options.seed !== false) yield* seedRows(env.databaseUrl, { count: options.events, status: "NEW", keys: 1000, prefix: "drain" })
    const relays = yield* Effect.forEach(Array.from({ length: options.instances }), () => startRelay(relayEnv(env, options.relay)), {
      concurrency: "unbounded",
    })
    const startedAt = Math.min(...relays.map((r) => r.startedAt))
    yield* waitDrained(env.databaseUrl, 30 * 60_000)
    const costs = relays.map((r) => processCost(r.child.pid!))
    const last = yield* lastSentAt(env.databaseUrl)
    const seconds = (last.ms - startedAt) / 1000
    return {
      events: last.sent,
      instances: options.instances,
      seconds,
      eventsPerSecond: last.sent / seconds,
      cpuMicrosPerEvent: (costs.reduce((s, c) => s + c.cpuSeconds, 0) / last.sent) * 1e6,
      peakRssMb: Math.max(...costs.map((c) => c.peakRssMb)),
    } satisfies DrainResult
  }).pipe(Effect.scoped)
