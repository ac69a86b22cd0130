/**
 * A writer process inserting at a fixed rate while one relay runs; a consumer measures,
 * per event, the time from the writer's COMMIT returning to the consumer receiving it.
 */
import { randomBytes } from "node:crypto"
import { Effect } from "effect"
import { Kafka } from "../../src/kafka/kafkajs.ts"
import type { BenchEnv } from "../support/bench-env.ts"
import { startRelay } from "../support/relay-process.ts"
import { pendingCount } from "../support/seed.ts"
import { runWriter } from "../support/writer-process.ts"
import { relayEnv } from "./drain.ts"

export interface SteadyResult {
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
      await consumer.connect()
      await consumer.subscribe({ topics: [env.topicMap.search_click!], fromBeginning: true })
      const joined = new Promise<void>((resolve) => consumer.on(consumer.events.GROUP_JOIN, () => resolve()))
      await consumer.run({
        eachBatch: async ({ batch }) => {
          const now = Date.now()
          for (const m of batch.messages) {
            const key = m.headers?.dedup_key?.toString()
            if (key !== undefined && !received.has(key)) received.set(key, now)
          }
        },
      })
      await joined
      return { consumer, received }
    }),
    ({ consumer }) => Effect.promise(() => consumer.disconnect()),
  )

export const steadyRate = (env: BenchEnv, o: { rate: number; perTx: number; seconds: number; notify: boolean }) =>
  Effect.gen(function* () {
    yield* startRelay(relayEnv(env, { LISTEN_NOTIFY: String(o.notify) }))
    const { received } = yield* startConsumer(env)
    const writer = yield* runWriter(env.databaseUrl, { ...o, keepTimes: true })
    const backlogAtEnd = yield* pendingCount(env.databaseUrl)
    const deadline = Date.now() + 30_000
    while (received.size < writer.committed.length && Date.now() < deadline) yield* Effect.sleep("100 millis")
    const latencies = writer.committed
      .map(([key, at]) => (received.get(key) ?? Number.NaN) - at)
      .filter((ms) => !Number.isNaN(ms))
      .sort((a, b) => a - b)
    const lastReceipt = [...received.values()].reduce((a, b) => Math.max(a, b), 0)
    const firstCommit = writer.committed.reduce((a, [, at]) => Math.min(a, at), Number.POSITIVE_INFINITY)
    return {
      ...o,
      written: writer.committed.length,
      received: latencies.length,
      keptPerSecond: latencies.length / ((lastReceipt - firstCommit) / 1000),
      writerMaxBehindMs: writer.maxBehindMs,
      backlogAtEnd,
      p50Ms: percentile(latencies, 50),
      p95Ms: percentile(latencies, 95),
      p99Ms: percentile(latencies, 99),
      maxMs: latencies.at(-1) ?? Number.NaN,
    } satisfies SteadyResult
  }).pipe(Effect.scoped)
