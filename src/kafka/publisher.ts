/**
 * Publishes records with one idempotent kafkajs producer, one send at a time (the safe
 * use of kafkajs' idempotence: acks=all, one request in flight, see KAFKA.md), and
 * reports where each record landed. A producer whose state may be broken (sequence or
 * producer-id errors, a send that timed out, a rejected record whose sequence numbers
 * kafkajs has already spent) is thrown away and a new one made, so one bad record never
 * costs an innocent one an OUT_OF_ORDER_SEQUENCE_NUMBER.
 */
import { Clock, Context, Duration, Effect, Layer, Metric, Semaphore } from "effect"
import { RelayConfig } from "../config/config.ts"
import { type KafkaRejected, KafkaUnavailable } from "../domain/errors.ts"
import type { Delivery } from "../domain/outbox-event.ts"
import { resends } from "../telemetry/metrics.ts"
import { classifyKafkaError } from "./error-classification.ts"
import { KafkaClient } from "./kafka-client.ts"
import { type Admin, type PartitionerArgs, Partitioners, type Producer } from "./kafkajs.ts"
import type { OutboundRecord } from "./records.ts"

export const producerRecreations = Metric.counter("outbox_producer_recreations_total", {
  description: "Kafka producers discarded and recreated after an unrecoverable error",
  incremental: true,
})

// A missing topic is asked about again this often, so a newly created one is picked up soon.
const MISSING_TOPIC_TTL_MS = 5_000

/** A record as handed to kafkajs, with the partition its partitioner chose (-1 until then). */
interface OutgoingMessage {
  readonly key: string
  readonly value: string | null
  readonly headers: Readonly<Record<string, string>>
  chosenPartition: number
}

/** After these, the producer's sequence or id state can no longer be trusted. */
const needsNewProducer = (e: KafkaUnavailable | KafkaRejected): boolean =>
  e._tag === "KafkaRejected" || e.reason === "producer_broken" || e.reason === "timeout"

export class Publisher extends Context.Service<
  Publisher,
  {
    /** All records or none: on failure nothing may be marked SENT (some may still have landed: at least once). */
    readonly publish: (records: ReadonlyArray<OutboundRecord>) => Effect.Effect<ReadonlyArray<Delivery>, KafkaUnavailable | KafkaRejected>
    /** Whether a broker answers now (readiness). */
    readonly checkReachable: Effect.Effect<void, KafkaUnavailable>
    /**
     * The topics among these that the broker does not have. Their records are retried later
     * instead of failing the whole batch: one unmapped topic must not hold up the others.
     */
    readonly missingTopics: (topics: Iterable<string>) => Effect.Effect<ReadonlySet<string>, KafkaUnavailable>
  }
>()("outbox-relay/Publisher") {
  static readonly layer = Layer.effect(
    Publisher,
    Effect.gen(function* () {
      const config = yield* RelayConfig
      const kafka = yield* KafkaClient
      const sendLock = yield* Semaphore.make(1)
      // kafkajs chooses each record's partition (Java-compatible murmur2, over its own refreshed
      // metadata, which also lets a broker with auto.create.topics.enable create a new topic);
      // this wrapper writes the choice onto the message (one of ours, made per send), so the
      // reply's base offsets give each record's offset. A WeakMap here cost ~1.5 % of the relay's CPU.
      const recordingPartitioner = () => {
        const choose = Partitioners.DefaultPartitioner()
        return (args: PartitionerArgs) => {
          const partition = choose(args)
          ;(args.message as OutgoingMessage).chosenPartition = partition
          return partition
        }
      }
      const publishTimeout = Duration.millis(config.publishTimeoutMs)

      const newProducer = () =>
        kafka.producer({
          idempotent: true,
          maxInFlightRequests: 1,
          allowAutoTopicCreation: config.kafkaAutoCreateTopics,
          retry: { retries: 2 },
          createPartitioner: recordingPartitioner,
        })
      let producer: Producer = newProducer()
      let connected = false
      let admin: Admin = kafka.admin()
      let adminConnected = false

      const attempt = <A>(operation: string, f: () => Promise<A>) =>
        Effect.tryPromise({ try: f, catch: classifyKafkaError }).pipe(
          Effect.timeoutOrElse({
            duration: publishTimeout,
            orElse: () =>
              Effect.fail(
                new KafkaUnavailable({
                  reason: "timeout",
                  message: `${operation} timed out after ${config.publishTimeoutMs} ms`,
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
          yield* Metric.update(producerRecreations, 1)
          yield* Effect.logWarning("Kafka producer recreated").pipe(Effect.annotateLogs({ reason }))
          // The old producer may be wedged; do not wait on it for long.
          yield* Effect.promise(() => old.disconnect().catch(() => undefined)).pipe(Effect.timeout("2 seconds"), Effect.ignore)
        })

      const adminReady = Effect.suspend(() =>
        adminConnected
          ? Effect.void
          : attempt("admin connect", () => admin.connect()).pipe(Effect.tap(() => Effect.sync(() => (adminConnected = true)))),
      )

      // A kafkajs admin whose calls failed across a network stall can stay broken for good
      // (every call: "Broker not connected", though the broker is fine): the loop would wait
      // for Kafka forever. So an admin call that fails throws that admin away; the next call
      // connects a new one. The old one is disconnected in the background (it may be wedged).
      const adminCall = <A>(operation: string, f: (admin: Admin) => Promise<A>) =>
        Effect.suspend(() => {
          const used = admin
          return adminReady.pipe(
            Effect.andThen(attempt(operation, () => f(used))),
            Effect.tapError((e) => (e._tag === "KafkaUnavailable" && e.reason !== "unknown_topic" ? discardAdmin(used) : Effect.void)),
          )
        })
      const discardAdmin = (broken: Admin) =>
        Effect.suspend(() => {
          if (admin !== broken) return Effect.void
          admin = kafka.admin()
          adminConnected = false
          return Effect.forkDetach(
            Effect.promise(() => broken.disconnect().catch(() => undefined)).pipe(Effect.timeout("5 seconds"), Effect.ignore),
          )
        }).pipe(Effect.asVoid)

      const absent = new Map<string, number>()
      const missingTopics = (topics: Iterable<string>) =>
        Effect.gen(function* () {
          const missing = new Set<string>()
          const now = yield* Clock.currentTimeMillis
          for (const topic of new Set(topics)) {
            if ((absent.get(topic) ?? 0) > now) {
              missing.add(topic)
              continue
            }
            // Admin metadata never auto-creates a topic: this asks whether it exists now.
            const found = yield* Effect.result(adminCall(`metadata of ${topic}`, (a) => a.fetchTopicMetadata({ topics: [topic] })))
            if (found._tag === "Success") continue
            const error = found.failure
            if (error._tag !== "KafkaUnavailable" || error.reason !== "unknown_topic") {
              return yield* new KafkaUnavailable({ reason: "unreachable", message: error.message, cause: error.cause })
            }
            absent.set(topic, now + MISSING_TOPIC_TTL_MS)
            missing.add(topic)
          }
          return missing
        })

      const send = (records: ReadonlyArray<OutboundRecord>) =>
        Effect.gen(function* () {
          const messages = records.map((r): OutgoingMessage => ({ key: r.key, value: r.value, headers: r.headers, chosenPartition: -1 }))
          const byTopic = new Map<string, Array<OutgoingMessage>>()
          records.forEach((r, i) => {
            const list = byTopic.get(r.topic) ?? []
            list.push(messages[i]!)
            byTopic.set(r.topic, list)
          })
          yield* ensureConnected
          const replies = yield* attempt("send", () =>
            producer.sendBatch({
              acks: -1,
              timeout: config.publishTimeoutMs,
              topicMessages: [...byTopic].map(([topic, list]) => ({ topic, messages: list })),
            }),
          ).pipe(Effect.tapError((e) => Metric.update(Metric.withAttributes(resends, { reason: e.reason }), records.length)))
          // Within a partition, kafkajs keeps the given order: each record's offset is its
          // partition's base offset plus the records before it there. Numbers, not BigInts:
          // offsets are exact up to 2^53, which no partition reaches.
          const nextOffset = new Map<string, Array<number>>()
          for (const r of replies) {
            const partitions = nextOffset.get(r.topicName) ?? []
            partitions[r.partition] = Number(r.baseOffset ?? r.offset ?? "-1")
            nextOffset.set(r.topicName, partitions)
          }
          return records.map((record, i): Delivery => {
            const partition = messages[i]!.chosenPartition
            const partitions = nextOffset.get(record.topic)
            const offset = partitions?.[partition] ?? -1
            if (offset >= 0) partitions![partition] = offset + 1
            return { topic: record.topic, partition, offset: String(offset) }
          })
        })

      const publish = (records: ReadonlyArray<OutboundRecord>) =>
        records.length === 0
          ? Effect.succeed([])
          : sendLock.withPermits(1)(
              send(records).pipe(Effect.tapError((e) => (needsNewProducer(e) ? recreateProducer(e.message) : Effect.void))),
            )

      const checkReachable = adminCall("describe cluster", (a) => a.describeCluster()).pipe(
        Effect.mapError((e) =>
          e._tag === "KafkaUnavailable" ? e : new KafkaUnavailable({ reason: "unreachable", message: e.message, cause: e.cause }),
        ),
      )

      yield* Effect.addFinalizer(() =>
        Effect.promise(() => Promise.allSettled([producer.disconnect(), admin.disconnect()])).pipe(
          Effect.timeout("5 seconds"),
          Effect.ignore,
        ),
      )
      return Publisher.of({ publish, checkReachable, missingTopics })
    }),
  ).pipe(Layer.provide(KafkaClient.layer))
}
