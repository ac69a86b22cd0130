/** Creates topics that do not exist yet (demo and tests; production clusters usually manage their own). */
import { Effect } from "effect"
import type { KafkaRejected, KafkaUnavailable } from "../domain/errors.ts"
import { classifyKafkaError } from "./error-classification.ts"
import { Kafka } from "./kafkajs.ts"

export const ensureTopics = (
  brokers: ReadonlyArray<string>,
  topics: ReadonlyArray<string>,
  numPartitions = 3,
): Effect.Effect<void, KafkaUnavailable | KafkaRejected> =>
  Effect.acquireUseRelease(
    Effect.sync(() => new Kafka({ clientId: "outbox-relay-admin", brokers: [...brokers], logLevel: 1 }).admin()),
    (admin) =>
      Effect.tryPromise({
        try: async () => {
          await admin.connect()
          const existing = new Set(await admin.listTopics())
          const missing = [...new Set(topics)].filter((t) => !existing.has(t))
          if (missing.length > 0) {
            await admin.createTopics({
              waitForLeaders: true,
              topics: missing.map((topic) => ({ topic, numPartitions, replicationFactor: 1 })),
            })
          }
        },
        catch: classifyKafkaError,
      }),
    (admin) => Effect.promise(() => admin.disconnect()),
  )
