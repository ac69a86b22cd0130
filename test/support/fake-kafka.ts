/**
 * An in-memory Kafka for the simulation, behind the relay's Publisher service: topics with
 * partitions and offsets, acknowledgements, and the faults the relay must survive. A send
 * appends to the log before its acknowledgement can be lost, so "sent but not acknowledged"
 * is a real state here, as with a real broker. Time is the Effect Clock.
 */
import { Clock, Effect, Layer } from "effect"
import { RelayConfig } from "../../src/config/config.ts"
import { KafkaRejected, KafkaUnavailable, KafkaUnknownTopic } from "../../src/domain/errors.ts"
import type { Delivery } from "../../src/domain/outbox-event.ts"
import { Publisher } from "../../src/kafka/publisher.ts"
import { type OutboundRecord, recordBytes } from "../../src/kafka/records.ts"
import { InstanceId } from "../../src/outbox/instance-id.ts"

export interface LoggedRecord {
  readonly topic: string
  readonly partition: number
  readonly offset: number
  readonly key: string
  readonly eventId: string
  readonly headers: Readonly<Record<string, string>>
  /** False when the append's acknowledgement never reached the relay (a timeout). */
  acknowledged: boolean
  readonly by: string
  readonly at: number
}

export interface KafkaFaults {
  /** No broker answers. */
  down: boolean
  /** Instances whose process "died": their sends never arrive. */
  readonly severed: Set<string>
  /** A send appends its records, then its acknowledgement is lost (a timeout) with this probability. */
  timeoutRate: number
  /** A send fails before appending anything with this probability (a transient broker error). */
  errorRate: number
  /** Each send takes this long (the lease may expire meanwhile). */
  sendDelayMs: number
}

export interface FakeKafka {
  /** topic → partition count; a topic not here does not exist. */
  readonly topics: Map<string, number>
  readonly log: Array<LoggedRecord>
  readonly faults: KafkaFaults
  /** Records of any topic over this size are refused (MESSAGE_TOO_LARGE). */
  maxRecordBytes: number
  /** Dead-letter topic records over this size are refused. */
  dlqMaxRecordBytes: number
  /** Records whose value contains this marker are refused as invalid. */
  readonly poisonMarker: string
  readonly random: () => number
}

export const makeFakeKafka = (options: {
  readonly topics: ReadonlyArray<string>
  readonly random: () => number
  readonly maxRecordBytes?: number
  readonly dlqMaxRecordBytes?: number
}): FakeKafka => ({
  topics: new Map(options.topics.map((t) => [t, 3])),
  log: [],
  faults: { down: false, severed: new Set(), timeoutRate: 0, errorRate: 0, sendDelayMs: 0 },
  maxRecordBytes: options.maxRecordBytes ?? Number.POSITIVE_INFINITY,
  dlqMaxRecordBytes: options.dlqMaxRecordBytes ?? Number.POSITIVE_INFINITY,
  poisonMarker: "\u0000poison",
  random: options.random,
})

const partitionOf = (key: string, partitions: number) => {
  let h = 0
  for (let i = 0; i < key.length; i++) h = (h * 31 + key.charCodeAt(i)) | 0
  return Math.abs(h) % partitions
}

/** One instance's Publisher over the shared fake broker. */
export const fakePublisherLayer = (kafka: FakeKafka) =>
  Layer.effect(
    Publisher,
    Effect.gen(function* () {
      const config = yield* RelayConfig
      const me = yield* InstanceId
      const unreachable = (message: string) => new KafkaUnavailable({ reason: "unreachable", message, cause: null })

      const refusal = (record: OutboundRecord): KafkaRejected | undefined => {
        const limit = record.topic === config.dlqTopic ? kafka.dlqMaxRecordBytes : kafka.maxRecordBytes
        if (recordBytes(record) > limit) {
          return new KafkaRejected({ reason: "message_too_large", message: "MESSAGE_TOO_LARGE (simulated)", cause: null })
        }
        if (record.value?.includes(kafka.poisonMarker)) {
          return new KafkaRejected({ reason: "invalid_record", message: "CORRUPT_MESSAGE (simulated)", cause: null })
        }
        return undefined
      }

      const append = (records: ReadonlyArray<OutboundRecord>, acknowledged: boolean, now: number): ReadonlyArray<Delivery> =>
        records.map((record) => {
          const partition = partitionOf(record.key, kafka.topics.get(record.topic)!)
          const offset = kafka.log.filter((r) => r.topic === record.topic && r.partition === partition).length
          kafka.log.push({
            topic: record.topic,
            partition,
            offset,
            key: record.key,
            eventId: record.headers.event_id ?? "",
            headers: record.headers,
            acknowledged,
            by: me,
            at: now,
          })
          return { topic: record.topic, partition, offset: String(offset) }
        })

      const publish = (records: ReadonlyArray<OutboundRecord>) =>
        Effect.gen(function* () {
          if (records.length === 0) return []
          if (kafka.faults.sendDelayMs > 0) yield* Effect.sleep(kafka.faults.sendDelayMs)
          if (kafka.faults.down || kafka.faults.severed.has(me)) return yield* unreachable("connection refused (simulated)")
          if (kafka.faults.errorRate > 0 && kafka.random() < kafka.faults.errorRate) {
            return yield* unreachable("NOT_LEADER_OR_FOLLOWER (simulated)")
          }
          const missing = [...new Set(records.filter((r) => !kafka.topics.has(r.topic)).map((r) => r.topic))]
          if (missing.length > 0) {
            return yield* new KafkaUnknownTopic({
              topics: missing,
              message: `UNKNOWN_TOPIC_OR_PARTITION ${missing.join(", ")}`,
              cause: null,
            })
          }
          const now = yield* Clock.currentTimeMillis
          const refused = records.map(refusal)
          const firstRefusal = refused.find((r) => r !== undefined)
          if (firstRefusal !== undefined) {
            // The refused records' partitions take nothing; other partitions of the request may.
            const badPartitions = new Set(
              records.filter((_, i) => refused[i] !== undefined).map((r) => `${r.topic}/${partitionOf(r.key, kafka.topics.get(r.topic)!)}`),
            )
            const others = records.filter((r) => !badPartitions.has(`${r.topic}/${partitionOf(r.key, kafka.topics.get(r.topic)!)}`))
            if (kafka.random() < 0.5) append(others, false, now)
            return yield* firstRefusal
          }
          if (kafka.faults.timeoutRate > 0 && kafka.random() < kafka.faults.timeoutRate) {
            append(records, false, now)
            yield* Effect.sleep(config.publishTimeoutMs)
            return yield* new KafkaUnavailable({
              reason: "timeout",
              message: `send timed out after ${config.publishTimeoutMs} ms`,
              cause: null,
            })
          }
          return append(records, true, now)
        })

      return Publisher.of({
        publish,
        checkReachable: Effect.suspend(() =>
          kafka.faults.down || kafka.faults.severed.has(me) ? Effect.fail(unreachable("connection refused (simulated)")) : Effect.void,
        ),
      })
    }),
  )
