/**
 * The demo: local PostgreSQL and Kafka (started where none is given), migrations,
 * sample events of every default type, and the relay run until each one is SENT.
 */
import { execFile } from "node:child_process"
import { randomBytes } from "node:crypto"
import { fileURLToPath } from "node:url"
import { Console, Effect, Fiber, Layer, Result, Schedule } from "effect"
import { Command } from "effect/cli"
import { SqlClient } from "effect/sql"
import { appLayer } from "../app-layer.ts"
import { parseConfig, RelayConfig } from "../config/config.ts"
import { DEFAULT_EVENT_TYPES } from "../domain/event-types.ts"
import type { NewEvent } from "../domain/outbox-event.ts"
import { ensureTopics } from "../kafka/topics.ts"
import { OutboxStore } from "../outbox/outbox-store.ts"
import { migrate } from "../outbox/schema-migrator.ts"
import { runRelay } from "../relay/relay.ts"
import { CommandFailed, reportFailures } from "./cli-failure.ts"

const INFRA_SCRIPT = fileURLToPath(new URL("../../scripts/infra.sh", import.meta.url))
const EVENTS_PER_TYPE = 3

/** DATABASE_URL and KAFKA_BROKERS from the environment, or from a local infrastructure started for the demo. */
const infrastructure = Effect.gen(function* () {
  if (process.env.DATABASE_URL && process.env.KAFKA_BROKERS) {
    return { DATABASE_URL: process.env.DATABASE_URL, KAFKA_BROKERS: process.env.KAFKA_BROKERS }
  }
  yield* Console.log("Starting local PostgreSQL and Kafka (scripts/infra.sh up)…")
  const out = yield* Effect.callback<string, CommandFailed>((resume) => {
    execFile("bash", [INFRA_SCRIPT, "up"], { env: process.env, maxBuffer: 1 << 20 }, (error, stdout, stderr) =>
      resume(
        error === null
          ? Effect.succeed(stdout)
          : Effect.fail(new CommandFailed({ message: `scripts/infra.sh up failed:\n${stderr.slice(-4000)}`, exitCode: 1 })),
      ),
    )
  })
  const env: Record<string, string> = {}
  for (const line of out.split("\n")) {
    const m = /^(?:export\s+)?(DATABASE_URL|KAFKA_BROKERS)=["']?([^"'\s]+)["']?\s*$/.exec(line.trim())
    if (m) env[m[1]!] = m[2]!
  }
  return {
    DATABASE_URL: process.env.DATABASE_URL || env.DATABASE_URL,
    KAFKA_BROKERS: process.env.KAFKA_BROKERS || env.KAFKA_BROKERS,
  }
})

const sampleEvents = (runId: string): ReadonlyArray<NewEvent> =>
  DEFAULT_EVENT_TYPES.flatMap((eventType, t) =>
    Array.from({ length: EVENTS_PER_TYPE }, (_, i) => ({
      dedupKey: `demo-${runId}-${eventType}-${i}`,
      eventType,
      aggregateKey: `demo-${runId}-session-${t % 3}`,
      payload: { demo: true, run: runId, type: eventType, seq: i, at: new Date().toISOString() },
      headers: { source: "outbox-relay-demo" },
      requestId: `req-${runId}-${t}-${i}`,
      traceparent: `00-${randomBytes(16).toString("hex")}-${randomBytes(8).toString("hex")}-01`,
    })),
  )

interface SentRow {
  readonly event_id: string
  readonly event_type: string
  readonly dedup_key: string
  readonly status: string
  readonly kafka_topic: string | null
  readonly kafka_partition: number | null
  readonly kafka_offset: string | null
  readonly last_error: string | null
}

export const demoCommand = Command.make("demo", {}, () =>
  reportFailures(
    Effect.gen(function* () {
      const infra = yield* infrastructure
      const parsed = parseConfig({ ...process.env, LOG_LEVEL: process.env.LOG_LEVEL ?? "warn", POLL_INTERVAL_MS: "200", ...infra })
      if (Result.isFailure(parsed)) {
        return yield* new CommandFailed({ message: parsed.failure.map((p) => `${p.variable} ${p.message}`).join("\n"), exitCode: 2 })
      }
      const config = parsed.success
      yield* Effect.gen(function* () {
        const report = yield* migrate()
        yield* Console.log(`Schema at version ${report.to}${report.applied.length > 0 ? ` (applied ${report.applied.join(", ")})` : ""}.`)
        yield* ensureTopics(config.kafkaBrokers, [...new Set(Object.values(config.topicMap)), config.dlqTopic])
        const runId = randomBytes(4).toString("hex")
        const events = sampleEvents(runId)
        const { inserted } = yield* (yield* OutboxStore).append(events)
        yield* Console.log(`Wrote ${inserted.length} sample events (${DEFAULT_EVENT_TYPES.length} types); relaying…`)

        const relay = yield* Effect.forkChild(runRelay)
        const sql = yield* SqlClient.SqlClient
        const rows = yield* sql<SentRow>`
          SELECT event_id::text, event_type, dedup_key, status, kafka_topic, kafka_partition, kafka_offset::text, last_error
            FROM outbox_event WHERE id = ANY(${inserted}::bigint[]) ORDER BY id`.pipe(
          Effect.repeat({
            schedule: Schedule.spaced("200 millis"),
            until: (rs) => rs.every((r) => r.status === "SENT" || r.status === "DEAD"),
          }),
          Effect.timeoutOrElse({
            duration: "60 seconds",
            orElse: () => Effect.fail(new CommandFailed({ message: "Not every sample event was sent within 60 s.", exitCode: 1 })),
          }),
        )
        yield* Fiber.interrupt(relay)
        for (const r of rows) {
          yield* Console.log(
            r.status === "SENT"
              ? `SENT event_id=${r.event_id} event_type=${r.event_type} dedup_key=${r.dedup_key} topic=${r.kafka_topic} partition=${r.kafka_partition} offset=${r.kafka_offset}`
              : `${r.status} event_id=${r.event_id} event_type=${r.event_type} dedup_key=${r.dedup_key} error=${r.last_error}`,
          )
        }
        const sent = rows.filter((r) => r.status === "SENT").length
        yield* Console.log(`${sent} of ${rows.length} sample events SENT.`)
        if (sent !== rows.length) return yield* new CommandFailed({ message: "Some sample events were not sent.", exitCode: 1 })
      }).pipe(Effect.provide(appLayer(Layer.succeed(RelayConfig, config))))
    }),
  ),
).pipe(
  Command.withDescription(
    "Start local PostgreSQL and Kafka where DATABASE_URL / KAFKA_BROKERS are not given, migrate, write sample events of every type, relay them and print a SENT line for each.",
  ),
)
