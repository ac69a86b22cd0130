/**
 * A writer process inserting at a fixed rate while one relay runs; a consumer measures,
 * per event, the time from the write to the consumer receiving it. The writer is pgbench
 * where it is installed (see support/pgbench-writer.ts: latency from the INSERT's own
 * timestamp, just before COMMIT), else bench/writer.ts (latency from its COMMIT returning).
 */
import { randomBytes } from "node:crypto"
import { Effect } from "effect"
import { Kafka } from "../../src/kafka/kafkajs.ts"
import { type BenchEnv, withSql } from "../support/bench-env.ts"
import { pgbenchAvailable, runPgbenchWriter, STAMP_HEADER } from "../support/pgbench-writer.ts"
import { startRelay } from "../support/relay-process.ts"
import { pendingCount } from "../support/seed.ts"
import { runWriter } from "../support/writer-process.ts"
import { relayEnv } from "./drain.ts"

export interface SteadyResult {
  readonly writer: "pgbench" | "node"
  readonly rate: number
  readonly perTx: number
  readonly notify: boolean
  readonly seconds: number
  readonly written: number
  readonly received: number
  readonly keptPerSecond: number
  readonly writerMaxBehindMs: number
  readonly backlogAtEnd: number
  readonly p50Ms: number
  readonly p95Ms: number
  readonly p99Ms: number
  readonly maxMs: number
}

const percentile = (sorted: ReadonlyArray<number>, p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN

/** A consumer that is joined and positioned at the end before the writer starts. */
const startConsumer = (env: BenchEnv) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const kafka = new Kafka({ clientId: "outbox-relay-bench-consumer", brokers: env.brokers.split(","), logLevel: 1 })
      const consumer = kafka.consumer({ groupId: `bench-${randomBytes(4).toString("hex")}`, maxWaitTimeInMs: 20 })
      const received = new Map<string, number>()
      // pgbench rows: write → receipt, computed on arrival from the row's own timestamp.
      const stamped: Array<number> = []
      await consumer.connect()
      await consumer.subscribe({ topics: [env.topicMap.search_click!], fromBeginning: true })
      const joined = new Promise<void>((resolve) => consumer.on(consumer.events.GROUP_JOIN, () => resolve()))
      await consumer.run({
        eachBatch: async ({ batch }) => {
          const now = Date.now()
          for (const m of batch.messages) {
            const key = m.headers?.dedup_key?.toString()
            if (key === undefined || received.has(key)) continue
            received.set(key, now)
            const writtenAt = m.headers?.[STAMP_HEADER]?.toString()
            if (writtenAt !== undefined) stamped.push(now - Number(writtenAt))
          }
        },
      })
      await joined
      return { consumer, received, stamped }
    }),
    ({ consumer }) => Effect.promise(() => consumer.disconnect()),
  )

export const steadyRate = (env: BenchEnv, o: { rate: number; perTx: number; seconds: number; notify: boolean }) =>
  Effect.gen(function* () {
    // NOTIFY off is the configuration README suggests for high-rate writers: no trigger (whose
    // NOTIFY serialises every writer's commit) and no LISTEN; the relay polls.
    if (!o.notify) yield* withSql(env.databaseUrl, (sql) => sql`ALTER TABLE outbox_event DISABLE TRIGGER outbox_event_notify_insert`)
    yield* startRelay(relayEnv(env, { LISTEN_NOTIFY: String(o.notify) }))
    const { received, stamped } = yield* startConsumer(env)
    const usePgbench = pgbenchAvailable()
    const startedAt = Date.now()
    const written = usePgbench
      ? yield* runPgbenchWriter(env.databaseUrl, o).pipe(
          Effect.map((r) => ({ count: r.transactions * o.perTx, maxBehindMs: r.lagMaxMs, latencies: () => [...stamped] })),
        )
      : yield* runWriter(env.databaseUrl, { ...o, keepTimes: true }).pipe(
          Effect.map((w) => ({
            count: w.committed.length,
            maxBehindMs: w.maxBehindMs,
            latencies: () => w.committed.map(([key, at]) => (received.get(key) ?? Number.NaN) - at).filter((ms) => !Number.isNaN(ms)),
          })),
        )
    const backlogAtEnd = yield* pendingCount(env.databaseUrl)
    const deadline = Date.now() + 30_000
    while (received.size < written.count && Date.now() < deadline) yield* Effect.sleep("100 millis")
    const latencies = written.latencies().sort((a, b) => a - b)
    const lastReceipt = [...received.values()].reduce((a, b) => Math.max(a, b), 0)
    return {
      writer: usePgbench ? "pgbench" : "node",
      ...o,
      written: written.count,
      received: latencies.length,
      keptPerSecond: latencies.length / ((lastReceipt - startedAt) / 1000),
      writerMaxBehindMs: written.maxBehindMs,
      backlogAtEnd,
      p50Ms: percentile(latencies, 50),
      p95Ms: percentile(latencies, 95),
      p99Ms: percentile(latencies, 99),
      maxMs: latencies.at(-1) ?? Number.NaN,
    } satisfies SteadyResult
  }).pipe(Effect.scoped)
