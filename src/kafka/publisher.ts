/**
 * Publishes records with one idempotent kafkajs producer, one send at a time (the safe
 * use of kafkajs' idempotence: acks=all, one request in flight, see KAFKA.md), and
 * reports where each record landed. A producer whose state is broken (sequence or
 * producer-id errors, a send that timed out) is thrown away and a new one made.
 */
import { Context, Duration, Effect, Layer, Metric, Semaphore } from "effect"
import { RelayConfig } from "../config/config.ts"
import { type KafkaRejected, KafkaUnavailable } from "../domain/errors.ts"
import type { Delivery } from "../domain/outbox-event.ts"
import { classifyKafkaError } from "./error-classification.ts"
import { KafkaClient } from "./kafka-client.ts"
import { type Admin, Partitioners, type PartitionMetadata, type Producer } from "./kafkajs.ts"
import type { OutboundRecord } from "./records.ts"

export const producerRecreations = Metric.counter("outbox_producer_recreations_total", {
  description: "Kafka producers discarded and recreated after an unrecoverable error",
  incremental: true,
})

const METADATA_TTL_MS = 60_000

export class Publisher extends Context.Service<
  Publisher,
  {
    /** All records or none: on failure nothing may be marked SENT (some may still have landed: at least once). */
    readonly publish: (records: ReadonlyArray<OutboundRecord>) => Effect.Effect<ReadonlyArray<Delivery>, KafkaUnavailable | KafkaRejected>
    /** Whether a broker answers now (readiness). */
    readonly checkReachable: Effect.Effect<void, KafkaUnavailable>
  }
>()("outbox-relay/Publisher") {
  static readonly layer = Layer.effect(
    Publisher,
    Effect.gen(function* () {
      const config = yield* RelayConfig
      const kafka = yield* KafkaClient
      const sendLock = yield* Semaphore.make(1)
      const partitioner = Partitioners.DefaultPartitioner()
      const publishTimeout = Duration.millis(config.publishTimeoutMs)

      const newProducer = () =>
        kafka.producer({
          idempotent: true,
          maxInFlightRequests: 1,
          allowAutoTopicCreation: true,
          retry: { retries: 2 },
          createPartitioner: Partitioners.DefaultPartitioner,
        })
      let producer: Producer = newProducer()
      let connected = false
      const admin: Admin = kafka.admin()
      let adminConnected = false
      const partitions = new Map<string, { readonly metadata: ReadonlyArray<PartitionMetadata>; readonly until: number }>()

      const attempt = <A>(operation: string, f: () => Promise<A>) =>
        Effect.tryPromise({ try: f, catch: classifyKafkaError }).pipe(
          Effect.timeoutOrElse({
            duration: publishTimeout,
            orElse: () =>
              Effect.fail(
                new KafkaUnavailable({
                  message: `${operation} timed out after ${config.publishTimeoutMs} ms`,
                  producerFenced: true,
                  cause: null,
                }),
              ),
          }),
        )

      const ensureConnected = Effect.suspend(() =>
        connected
          ? Effect.void
          : attempt("producer connect", () => producer.connect()).pipe(Effect.tap(() => Effect.sync(() => (connected = true)))),
      )

      const recreateProducer = (reason: string) =>
        Effect.gen(function* () {
          const old = producer
          producer = newProducer()
          connected = false
          partitions.clear()
          yield* Metric.update(producerRecreations, 1)
          yield* Effect.logWarning("Kafka producer recreated").pipe(Effect.annotateLogs({ reason }))
          // The old producer may be wedged; do not wait on it for long.
          yield* Effect.promise(() => old.disconnect().catch(() => undefined)).pipe(Effect.timeout("2 seconds"), Effect.ignore)
        })

      const partitionMetadata = (topic: string) =>
        Effect.gen(function* () {
          const cached = partitions.get(topic)
          if (cached !== undefined && cached.until > Date.now()) return cached.metadata
          if (!adminConnected) {
            yield* attempt("admin connect", () => admin.connect())
            adminConnected = true
          }
          const { topics } = yield* attempt(`metadata of ${topic}`, () => admin.fetchTopicMetadata({ topics: [topic] }))
          const metadata = topics[0]?.partitions ?? []
          if (metadata.length === 0) {
            return yield* new KafkaUnavailable({ message: `topic ${topic} has no partitions`, producerFenced: false, cause: null })
          }
          partitions.set(topic, { metadata, until: Date.now() + METADATA_TTL_MS })
          return metadata
        })

      const send = (records: ReadonlyArray<OutboundRecord>) =>
        Effect.gen(function* () {
          // The partition is chosen here (with kafkajs' Java-compatible partitioner) so that each
          // record's offset can be read off its partition's base offset in the reply.
          const byTopic = new Map<string, Array<{ partition: number; record: OutboundRecord }>>()
          const placed: Array<{ topic: string; partition: number }> = []
          for (const record of records) {
            const metadata = yield* partitionMetadata(record.topic)
            const partition = partitioner({
              topic: record.topic,
              partitionMetadata: [...metadata],
              message: { key: record.key, value: record.value },
            })
            const list = byTopic.get(record.topic) ?? []
            list.push({ partition, record })
            byTopic.set(record.topic, list)
            placed.push({ topic: record.topic, partition })
          }
          yield* ensureConnected
          const replies = yield* attempt("send", () =>
            producer.sendBatch({
              acks: -1,
              timeout: config.publishTimeoutMs,
              topicMessages: [...byTopic].map(([topic, list]) => ({
                topic,
                messages: list.map(({ partition, record }) => ({
                  key: record.key,
                  value: record.value,
                  headers: record.headers,
                  partition,
                })),
              })),
            }),
          )
          const base = new Map(replies.map((r) => [`${r.topicName}\u0000${r.partition}`, BigInt(r.baseOffset ?? r.offset ?? "-1")]))
          const next = new Map<string, bigint>()
          return placed.map(({ topic, partition }): Delivery => {
            const slot = `${topic}\u0000${partition}`
            const offset = next.get(slot) ?? base.get(slot) ?? -1n
            next.set(slot, offset + 1n)
            return { topic, partition, offset: offset.toString() }
          })
        })

      const publish = (records: ReadonlyArray<OutboundRecord>) =>
        records.length === 0
          ? Effect.succeed([])
          : sendLock.withPermits(1)(
              send(records).pipe(
                Effect.tapError((e) => (e._tag === "KafkaUnavailable" && e.producerFenced ? recreateProducer(e.message) : Effect.void)),
              ),
            )

      const checkReachable = Effect.gen(function* () {
        if (!adminConnected) {
          yield* attempt("admin connect", () => admin.connect())
          adminConnected = true
        }
        yield* attempt("describe cluster", () => admin.describeCluster())
      }).pipe(
        Effect.mapError((e) =>
          e._tag === "KafkaUnavailable" ? e : new KafkaUnavailable({ message: e.message, producerFenced: false, cause: e }),
        ),
      )

      yield* Effect.addFinalizer(() =>
        Effect.promise(() => Promise.allSettled([producer.disconnect(), admin.disconnect()])).pipe(
          Effect.timeout("5 seconds"),
          Effect.ignore,
        ),
      )
      return Publisher.of({ publish, checkReachable })
    }),
  ).pipe(Layer.provide(KafkaClient.layer))
}
