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
  /** Landed after the relay had stopped waiting for it (a send slower than PUBLISH_TIMEOUT_MS). */
  readonly late: boolean
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
  /** Each send takes at least this long (a slow-sends window: the lease may expire meanwhile). */
  sendDelayMs: number
}

export interface SendCounts {
  main: number
  mainFailed: number
  deadLetter: number
  deadLetterFailed: number
}

/** Told about every acknowledgement as it reaches the relay (the simulation's step checker). */
export interface BrokerObserver {
  readonly sending: (by: string, now: number, records: ReadonlyArray<{ readonly topic: string; readonly eventId: string }>) => void
  readonly acknowledged: (by: string, now: number, records: ReadonlyArray<LoggedRecord>) => void
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
  /**
   * How long one send takes when no fault slows it (drawn per send): a slow but live broker
   * answers every send, just late. A send slower than PUBLISH_TIMEOUT_MS times out after it,
   * and its records may still land (unacknowledged) when the broker gets to them.
   */
  latencyMs: () => number
  /** Sends per event id, by where they went and whether the relay got an acknowledgement. */
  readonly sends: Map<string, SendCounts>
  observer: BrokerObserver | undefined
}

export const makeFakeKafka = (options: {
  readonly topics: ReadonlyArray<string>
  readonly random: () => number
  readonly maxRecordBytes?: number
  readonly dlqMaxRecordBytes?: number
  readonly latencyMs?: () => number
}): FakeKafka => ({
  topics: new Map(options.topics.map((t) => [t, 3])),
  log: [],
  faults: { down: false, severed: new Set(), timeoutRate: 0, errorRate: 0, sendDelayMs: 0 },
  maxRecordBytes: options.maxRecordBytes ?? Number.POSITIVE_INFINITY,
  dlqMaxRecordBytes: options.dlqMaxRecordBytes ?? Number.POSITIVE_INFINITY,
  poisonMarker: "\u0000poison",
  random: options.random,
  latencyMs: options.latencyMs ?? (() => 0),
  sends: new Map(),
  observer: undefined,
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
      // Built once: a Schema error's constructor validates, and the fake fails thousands of sends a run.
      const connectionRefused = new KafkaUnavailable({ reason: "unreachable", message: "connection refused (simulated)", cause: null })
      const notLeader = new KafkaUnavailable({ reason: "unreachable", message: "NOT_LEADER_OR_FOLLOWER (simulated)", cause: null })
      const tooLarge = new KafkaRejected({ reason: "message_too_large", message: "MESSAGE_TOO_LARGE (simulated)", cause: null })
      const corrupt = new KafkaRejected({ reason: "invalid_record", message: "CORRUPT_MESSAGE (simulated)", cause: null })

      const refusal = (record: OutboundRecord): KafkaRejected | undefined => {
        const limit = record.topic === config.dlqTopic ? kafka.dlqMaxRecordBytes : kafka.maxRecordBytes
        if (recordBytes(record) > limit) {
          return tooLarge
        }
        if (record.value?.includes(kafka.poisonMarker)) {
          return corrupt
        }
        return undefined
      }

      const append = (records: ReadonlyArray<OutboundRecord>, acknowledged: boolean, now: number, late = false): ReadonlyArray<Delivery> =>
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
            late,
            by: me,
            at: now,
          })
          return { topic: record.topic, partition, offset: String(offset) }
        })

      /** What the broker does with a send once it gets to it; `timedOut`: the relay stopped waiting. */
      const land = (records: ReadonlyArray<OutboundRecord>, timedOut: boolean) =>
        Effect.gen(function* () {
          if (kafka.faults.down || kafka.faults.severed.has(me)) return yield* connectionRefused
          if (kafka.faults.errorRate > 0 && kafka.random() < kafka.faults.errorRate) {
            return yield* notLeader
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
            if (kafka.random() < 0.5) append(others, false, now, timedOut)
            return yield* firstRefusal
          }
          if (timedOut || (kafka.faults.timeoutRate > 0 && kafka.random() < kafka.faults.timeoutRate)) {
            append(records, false, now, timedOut)
            return yield* timeout
          }
          const deliveries = append(records, true, now)
          kafka.observer?.acknowledged(me, now, kafka.log.slice(kafka.log.length - records.length))
          return deliveries
        })

      const timeout = new KafkaUnavailable({
        reason: "timeout",
        message: `send timed out after ${config.publishTimeoutMs} ms`,
        cause: null,
      })

      const publish = (records: ReadonlyArray<OutboundRecord>) =>
        Effect.gen(function* () {
          if (records.length === 0) return []
          if (kafka.observer !== undefined) {
            const now = yield* Clock.currentTimeMillis
            kafka.observer.sending(
              me,
              now,
              records.map((r) => ({ topic: r.topic, eventId: r.headers.event_id ?? "" })),
            )
          }
          const counts = records.map((r) => {
            const id = r.headers.event_id ?? ""
            const c = kafka.sends.get(id) ?? { main: 0, mainFailed: 0, deadLetter: 0, deadLetterFailed: 0 }
            kafka.sends.set(id, c)
            if (r.topic === config.dlqTopic) c.deadLetter++
            else c.main++
            return [r.topic === config.dlqTopic, c] as const
          })
          const failed = Effect.sync(() => {
            for (const [deadLetter, c] of counts) {
              if (deadLetter) c.deadLetterFailed++
              else c.mainFailed++
            }
          })
          return yield* send(records).pipe(Effect.tapError(() => failed))
        })

      const send = (records: ReadonlyArray<OutboundRecord>) =>
        Effect.gen(function* () {
          const delayMs = Math.max(kafka.latencyMs(), kafka.faults.sendDelayMs)
          if (delayMs > config.publishTimeoutMs) {
            // The relay gives up after PUBLISH_TIMEOUT_MS; the broker may still take the records later.
            yield* Effect.forkDetach(
              Effect.sleep(delayMs).pipe(
                Effect.andThen(Effect.suspend(() => (kafka.random() < 0.5 ? land(records, true) : Effect.void))),
                Effect.ignore,
              ),
            )
            yield* Effect.sleep(config.publishTimeoutMs)
            return yield* timeout
          }
          if (delayMs > 0) yield* Effect.sleep(delayMs)
          // A lost acknowledgement is a timeout: the relay waits out PUBLISH_TIMEOUT_MS first.
          return yield* land(records, false).pipe(
            Effect.tapError((e) => (e === timeout ? Effect.sleep(config.publishTimeoutMs - delayMs) : Effect.void)),
          )
        })

      return Publisher.of({
        publish,
        checkReachable: Effect.suspend(() =>
          kafka.faults.down || kafka.faults.severed.has(me) ? Effect.fail(connectionRefused) : Effect.void,
        ),
      })
    }),
  )
