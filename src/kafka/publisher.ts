/**
 * Publishes records with one idempotent kafkajs producer, one send at a time (the safe
 * use of kafkajs' idempotence: acks=all, one request in flight; see the README's Kafka
 * section), and reports where each record landed. A producer whose state may be broken
 * (sequence or producer-id errors, a send that timed out, a rejected record whose sequence
 * numbers kafkajs has already spent) is replaced, so one bad record never costs an innocent
 * one an OUT_OF_ORDER_SEQUENCE_NUMBER. Producer and admin client are scoped resources: a
 * replacement releases the old one.
 */
import { Cache, Context, Duration, Effect, Exit, Layer, Metric, Ref, ScopedRef, Semaphore } from "effect"
import { RelayConfig } from "../config/config.ts"
import { type KafkaPublishError, KafkaUnavailable, KafkaUnknownTopic } from "../domain/errors.ts"
import type { Delivery } from "../domain/outbox-event.ts"
import { resends } from "../telemetry/metrics.ts"
import { classifyKafkaError } from "./error-classification.ts"
import { KafkaClient } from "./kafka-client.ts"
import { type Admin, type PartitionerArgs, Partitioners } from "./kafkajs.ts"
import type { OutboundRecord } from "./records.ts"

export const producerRecreations = Metric.counter("outbox_producer_recreations_total", {
  description: "Kafka producers discarded and recreated after an unrecoverable error",
  incremental: true,
})

// A missing topic is asked about again this often, so a newly created one is picked up soon.
const MISSING_TOPIC_TTL = Duration.seconds(5)

/** A record as handed to kafkajs, with the partition its partitioner chose (-1 until then). */
interface OutgoingMessage {
  readonly key: string
  readonly value: string | null
  readonly headers: Readonly<Record<string, string>>
  chosenPartition: number
}

/** A kafkajs client and whether it has connected; connecting is retried until it succeeds once. */
interface Connectable<C> {
  readonly client: C
  readonly connected: Ref.Ref<boolean>
}

/** After these, the producer's sequence or id state can no longer be trusted. */
const needsNewProducer = (e: KafkaPublishError): boolean =>
  e._tag === "KafkaRejected" || (e._tag === "KafkaUnavailable" && (e.reason === "producer_broken" || e.reason === "timeout"))

export class Publisher extends Context.Service<
  Publisher,
  {
    /**
     * All records or none: on failure nothing may be marked SENT (some may still have landed:
     * at least once). A missing topic fails with the topics of this request the broker lacks.
     */
    readonly publish: (records: ReadonlyArray<OutboundRecord>) => Effect.Effect<ReadonlyArray<Delivery>, KafkaPublishError>
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

      // A replaced client may be wedged: its disconnect runs in the background, bounded, so a
      // replacement never holds up the next send.
      const scopedClient = <C extends { readonly disconnect: () => Promise<void> }>(make: () => C) =>
        Effect.acquireRelease(
          Effect.sync((): Connectable<C> => ({ client: make(), connected: Ref.makeUnsafe(false) })),
          ({ client }) =>
            Effect.forkDetach(
              Effect.promise(() => client.disconnect().catch(() => undefined)).pipe(Effect.timeout("5 seconds"), Effect.ignore),
            ),
        )
      const connect = <C extends { readonly connect: () => Promise<void> }>(operation: string, c: Connectable<C>) =>
        Effect.flatMap(Ref.get(c.connected), (ok) =>
          ok ? Effect.void : attempt(operation, () => c.client.connect()).pipe(Effect.andThen(Ref.set(c.connected, true))),
        )

      const newProducer = () =>
        kafka.producer({
          idempotent: true,
          maxInFlightRequests: 1,
          allowAutoTopicCreation: config.kafkaAutoCreateTopics,
          retry: { retries: 2 },
          createPartitioner: recordingPartitioner,
        })
      const producerRef = yield* ScopedRef.fromAcquire(scopedClient(newProducer))
      const adminRef = yield* ScopedRef.fromAcquire(scopedClient(() => kafka.admin()))
      // On shutdown, wait (bounded) for the current producer to disconnect cleanly.
      yield* Effect.addFinalizer(() =>
        Effect.flatMap(ScopedRef.get(producerRef), ({ client }) => Effect.promise(() => client.disconnect().catch(() => undefined))).pipe(
          Effect.timeout("5 seconds"),
          Effect.ignore,
        ),
      )

      const recreateProducer = (reason: string) =>
        ScopedRef.set(producerRef, scopedClient(newProducer)).pipe(
          Effect.andThen(Metric.update(producerRecreations, 1)),
          Effect.andThen(Effect.logWarning("Kafka producer recreated").pipe(Effect.annotateLogs({ reason }))),
        )

      // A kafkajs admin whose calls failed across a network stall can stay broken for good
      // (every call: "Broker not connected", though the broker is fine): the loop would wait
      // for Kafka forever. So an admin call that fails with an outage replaces that admin;
      // the next call connects a new one.
      const adminCall = <A>(operation: string, f: (admin: Admin) => Promise<A>) =>
        Effect.gen(function* () {
          const admin = yield* ScopedRef.get(adminRef)
          return yield* connect("admin connect", admin).pipe(
            Effect.andThen(attempt(operation, () => f(admin.client))),
            Effect.tapError((e) =>
              e._tag === "KafkaUnavailable"
                ? Effect.flatMap(ScopedRef.get(adminRef), (current) =>
                    current === admin
                      ? ScopedRef.set(
                          adminRef,
                          scopedClient(() => kafka.admin()),
                        )
                      : Effect.void,
                  )
                : Effect.void,
            ),
          )
        })

      // Whether the broker has a topic. Admin metadata never auto-creates one; a "missing"
      // answer is remembered briefly, an existing topic or an error not at all.
      const topicExists = yield* Cache.makeWith(
        (topic: string) =>
          adminCall(`metadata of ${topic}`, (a) => a.fetchTopicMetadata({ topics: [topic] })).pipe(
            Effect.as(true),
            Effect.catchTag("KafkaUnknownTopic", () => Effect.succeed(false)),
            Effect.catchTag("KafkaRejected", (e) =>
              Effect.fail(new KafkaUnavailable({ reason: "unreachable", message: e.message, cause: e })),
            ),
          ),
        { capacity: 1_024, timeToLive: (exit) => (Exit.isSuccess(exit) && !exit.value ? MISSING_TOPIC_TTL : Duration.zero) },
      )

      /** The broker said a topic is unknown: find which of the request's topics it lacks. */
      const unknownTopics = (records: ReadonlyArray<OutboundRecord>, error: KafkaUnknownTopic) =>
        Effect.gen(function* () {
          const missing: Array<string> = []
          for (const topic of new Set(records.map((r) => r.topic))) if (!(yield* Cache.get(topicExists, topic))) missing.push(topic)
          // Metadata says they all exist now (created meanwhile): an ordinary transient failure.
          if (missing.length === 0) return new KafkaUnavailable({ reason: "unreachable", message: error.message, cause: error })
          const message = missing.map((topic) => `topic ${topic} does not exist on the broker`).join("; ")
          return new KafkaUnknownTopic({ topics: missing, message, cause: error })
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
          const producer = yield* ScopedRef.get(producerRef)
          yield* connect("producer connect", producer)
          const replies = yield* attempt("send", () =>
            producer.client.sendBatch({
              acks: -1,
              timeout: config.publishTimeoutMs,
              topicMessages: [...byTopic].map(([topic, list]) => ({ topic, messages: list })),
            }),
          ).pipe(
            Effect.tapError((e) =>
              Metric.update(
                Metric.withAttributes(resends, { reason: e._tag === "KafkaUnknownTopic" ? "unknown_topic" : e.reason }),
                records.length,
              ),
            ),
          )
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
              send(records).pipe(
                Effect.catchTag("KafkaUnknownTopic", (e) => Effect.flatMap(unknownTopics(records, e), Effect.fail)),
                Effect.tapError((e) => (needsNewProducer(e) ? recreateProducer(e.message) : Effect.void)),
              ),
            )

      const checkReachable = adminCall("describe cluster", (a) => a.describeCluster()).pipe(
        Effect.mapError((e) =>
          e._tag === "KafkaUnavailable" ? e : new KafkaUnavailable({ reason: "unreachable", message: e.message, cause: e }),
        ),
      )

      return Publisher.of({ publish, checkReachable })
    }),
  ).pipe(Layer.provide(KafkaClient.layer))
}
