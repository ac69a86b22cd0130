/**
 * Wake-ups by LISTEN/NOTIFY: an event inserted while the relay is idle reaches Kafka well
 * within one poll interval, and still does after the listening connection was killed.
 * Latency is measured from the INSERT's commit (autocommit: the statement returned) to
 * the moment a real consumer, already subscribed, receives the message. The same is
 * measured with LISTEN_NOTIFY=false, and both are printed.
 */
import { randomBytes } from "node:crypto"
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { SqlClient } from "effect/sql"
import { inject } from "vitest"
import { Kafka, KafkaLogLevel } from "../../src/kafka/kafkajs.ts"
import { relayConfig, startRelay, withTestTopics } from "../support/relay-harness.ts"
import { eventually } from "../support/run-harness.ts"
import { sqlLayer, testDatabase } from "../support/test-database.ts"

const POLL_INTERVAL_MS = 1000

/** A consumer that is in its group and fetching before the first measurement starts. */
const liveConsumer = (topic: string) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const kafka = new Kafka({
        clientId: "notify-latency-test",
        brokers: inject("kafkaBrokers").split(","),
        logLevel: KafkaLogLevel.NOTHING,
      })
      const consumer = kafka.consumer({ groupId: `notify-latency-${randomBytes(4).toString("hex")}`, maxWaitTimeInMs: 5000 })
      const receivedAt = new Map<string, number>()
      await consumer.connect()
      await consumer.subscribe({ topics: [topic], fromBeginning: true })
      const joined = new Promise<void>((resolve) => consumer.on(consumer.events.GROUP_JOIN, () => resolve()))
      await consumer.run({
        eachMessage: async ({ message }) => {
          const key = message.headers?.dedup_key?.toString()
          if (key !== undefined && !receivedAt.has(key)) receivedAt.set(key, Date.now())
        },
      })
      await joined
      return { consumer, receivedAt }
    }),
    ({ consumer }) => Effect.promise(() => consumer.disconnect()),
  )

const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

describe("LISTEN/NOTIFY wake-ups", () => {
  it.live(
    `relays an event inserted while idle well within one poll interval (POLL_INTERVAL_MS=${POLL_INTERVAL_MS}), also after the LISTEN connection is killed, and measures NOTIFY on vs off`,
    () =>
      Effect.gen(function* () {
        const db = yield* testDatabase()
        const topics = yield* withTestTopics(["search_click"])
        const topic = topics.map.search_click!
        const { receivedAt } = yield* liveConsumer(topic)
        const sql = Context.get(yield* Layer.build(sqlLayer(db.url)), SqlClient.SqlClient)

        /** Inserts one event after an idle pause and returns ms from its commit to the consumer's receipt. */
        const measure = (dedupKey: string, idleMs: number) =>
          Effect.gen(function* () {
            yield* Effect.sleep(idleMs)
            yield* sql`INSERT INTO outbox_event (dedup_key, event_type, payload) VALUES (${dedupKey}, 'search_click', '{}'::jsonb)`.pipe(
              Effect.orDie,
            )
            const committedAt = Date.now()
            yield* eventually(
              Effect.sync(() => receivedAt.get(dedupKey)),
              (t) => t !== undefined,
              10_000,
              `${dedupKey} received`,
            )
            return receivedAt.get(dedupKey)! - committedAt
          })

        // Idle pauses of different lengths sample different phases of the poll timer.
        const pauses = [1300, 700, 1900, 1100, 1600, 900]

        const withNotify = yield* Effect.scoped(
          Effect.gen(function* () {
            yield* startRelay(relayConfig(db.url, { ...topics.env, POLL_INTERVAL_MS: String(POLL_INTERVAL_MS), LISTEN_NOTIFY: "true" }))
            const before = yield* Effect.forEach(pauses, (idle, i) => measure(`on-${i}`, idle))

            // Kill the listening connection: the relay must LISTEN again (backoff) and keep waking at once.
            const listener = () =>
              sql<{ pid: number }>`SELECT pid FROM pg_stat_activity
                                    WHERE datname = current_database() AND query ILIKE 'LISTEN%' AND pid <> pg_backend_pid()`.pipe(
                Effect.orDie,
              )
            const [killed] = yield* eventually(listener(), (rows) => rows.length === 1, 10_000, "one LISTEN connection")
            yield* sql`SELECT pg_terminate_backend(${killed!.pid})`.pipe(Effect.orDie)
            yield* eventually(
              listener(),
              (rows) => rows.length === 1 && rows[0]!.pid !== killed!.pid,
              10_000,
              "a new LISTEN connection after the old one was terminated",
            )
            const after = yield* Effect.forEach(pauses.slice(0, 3), (idle, i) => measure(`on-after-kill-${i}`, idle))
            return { before, after }
          }),
        )

        const withoutNotify = yield* Effect.scoped(
          Effect.gen(function* () {
            yield* startRelay(relayConfig(db.url, { ...topics.env, POLL_INTERVAL_MS: String(POLL_INTERVAL_MS), LISTEN_NOTIFY: "false" }))
            return yield* Effect.forEach(pauses, (idle, i) => measure(`off-${i}`, idle))
          }),
        )

        const report = (label: string, xs: ReadonlyArray<number>) =>
          `${label.padEnd(36)} n=${xs.length}  median=${median(xs)} ms  min=${Math.min(...xs)} ms  max=${Math.max(...xs)} ms  [${xs.join(", ")}]`
        console.log(
          [
            `idle insert → Kafka consumer latency, POLL_INTERVAL_MS=${POLL_INTERVAL_MS}:`,
            report("LISTEN_NOTIFY=true", withNotify.before),
            report("LISTEN_NOTIFY=true, after reconnect", withNotify.after),
            report("LISTEN_NOTIFY=false (polling only)", withoutNotify),
          ].join("\n"),
        )

        for (const ms of [...withNotify.before, ...withNotify.after]) expect(ms).toBeLessThan(500)
        // Polling alone is the fallback: never more than one interval plus the relay's own work.
        for (const ms of withoutNotify) expect(ms).toBeLessThan(POLL_INTERVAL_MS + 500)
      }),
    120_000,
  )

  it.live(
    "without NOTIFY, events that keep arriving are claimed at BUSY_POLL_INTERVAL_MS, not at POLL_INTERVAL_MS",
    () =>
      Effect.gen(function* () {
        const db = yield* testDatabase()
        const topics = yield* withTestTopics(["search_click"])
        const { receivedAt } = yield* liveConsumer(topics.map.search_click!)
        const sql = Context.get(yield* Layer.build(sqlLayer(db.url)), SqlClient.SqlClient)
        yield* startRelay(
          relayConfig(db.url, {
            ...topics.env,
            POLL_INTERVAL_MS: String(POLL_INTERVAL_MS),
            BUSY_POLL_INTERVAL_MS: "20",
            LISTEN_NOTIFY: "false",
          }),
        )
        const insert = (dedupKey: string) =>
          sql`INSERT INTO outbox_event (dedup_key, event_type, payload) VALUES (${dedupKey}, 'search_click', '{}'::jsonb)`.pipe(
            Effect.orDie,
            Effect.map(() => [dedupKey, Date.now()] as const),
          )
        // The first event waits for an idle poll; once it is through, rows are arriving.
        const [warmUp] = yield* insert("warm-up")
        yield* eventually(
          Effect.sync(() => receivedAt.has(warmUp)),
          (has) => has,
          10_000,
          "warm-up event received",
        )
        // Then a stream of events 50 ms apart for 2 s, each of which should not wait for the idle poll.
        const stream = yield* Effect.forEach(
          Array.from({ length: 40 }, (_, i) => i),
          (i) => insert(`busy-${i}`).pipe(Effect.tap(() => Effect.sleep("50 millis"))),
        )
        yield* eventually(
          Effect.sync(() => stream.every(([key]) => receivedAt.has(key))),
          (all) => all,
          10_000,
          "every streamed event received",
        )
        const latencies = stream.map(([key, at]) => receivedAt.get(key)! - at)
        console.log(`busy polling, LISTEN_NOTIFY=false, POLL_INTERVAL_MS=${POLL_INTERVAL_MS}: latencies [${latencies.join(", ")}] ms`)
        for (const ms of latencies) expect(ms).toBeLessThan(POLL_INTERVAL_MS / 2)
        expect(median(latencies)).toBeLessThan(200)
      }),
    60_000,
  )
})
