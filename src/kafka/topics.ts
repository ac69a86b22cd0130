/** Creates topics that do not exist yet (demo and tests; production clusters usually manage their own). */
import { Data, Effect, Schedule } from "effect"
import type { KafkaPublishError } from "../domain/errors.ts"
import { classifyKafkaError } from "./error-classification.ts"
import { type Admin, Kafka } from "./kafkajs.ts"

class LeadersPending extends Data.TaggedError("LeadersPending")<{ readonly topics: ReadonlyArray<string> }> {}

const attempt = <A>(f: () => Promise<A>) => Effect.tryPromise({ try: f, catch: classifyKafkaError })

/**
 * Every partition of the topics has a leader. kafkajs' own `waitForLeaders` gives up with
 * UNKNOWN_TOPIC_OR_PARTITION when the broker's metadata lags behind the creation (seen on a
 * broker just restarted with many topics), so the wait is ours, bounded, on a schedule.
 */
const awaitLeaders = (admin: Admin, topics: ReadonlyArray<string>) =>
  attempt(() => admin.fetchTopicMetadata({ topics: [...topics] })).pipe(
    Effect.flatMap(({ topics: found }) => {
      const ready = new Set(found.filter((t) => t.partitions.length > 0 && t.partitions.every((p) => p.leader >= 0)).map((t) => t.name))
      const pending = topics.filter((t) => !ready.has(t))
      return pending.length === 0 ? Effect.void : Effect.fail(new LeadersPending({ topics: pending }))
    }),
    Effect.retry(Schedule.spaced("100 millis").pipe(Schedule.upTo({ duration: "30 seconds" }))),
    Effect.catchTag("LeadersPending", (e) => Effect.fail(classifyKafkaError(new Error(`no leader yet for ${e.topics.join(", ")}`)))),
  )

export const ensureTopics = (
  brokers: ReadonlyArray<string>,
  topics: ReadonlyArray<string>,
  numPartitions = 3,
): Effect.Effect<void, KafkaPublishError> =>
  Effect.acquireUseRelease(
    Effect.sync(() => new Kafka({ clientId: "outbox-relay-admin", brokers: [...brokers], logLevel: 1 }).admin()),
    (admin) =>
      Effect.gen(function* () {
        yield* attempt(() => admin.connect())
        const existing = new Set(yield* attempt(() => admin.listTopics()))
        const missing = [...new Set(topics)].filter((t) => !existing.has(t))
        if (missing.length === 0) return
        // waitForLeaders: false — kafkajs' own wait (on by default) is the one that gives up; ours follows.
        yield* attempt(() =>
          admin.createTopics({ waitForLeaders: false, topics: missing.map((topic) => ({ topic, numPartitions, replicationFactor: 1 })) }),
        )
        yield* awaitLeaders(admin, missing)
      }),
    (admin) => Effect.promise(() => admin.disconnect()),
  )
