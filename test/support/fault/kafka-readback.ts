/**
 * Reads whole topics back from a given broker: everything up to each partition's end
 * offset at the time of the call, duplicates included, so every event can be counted.
 */
import { randomBytes } from "node:crypto"
import { Effect } from "effect"
import { Kafka, KafkaLogLevel } from "../../../src/kafka/kafkajs.ts"
import { ensureTopics } from "../../../src/kafka/topics.ts"

export interface KafkaMessage {
  readonly topic: string
  readonly partition: number
  readonly offset: number
  readonly key: string | null
  readonly value: string | null
  readonly headers: Readonly<Record<string, string>>
  /** The producer's timestamp (ms): orders arrivals across topics. */
  readonly timestamp: number
}

export interface ScenarioTopics {
  /** event_type → topic, for TOPIC_MAP. */
  readonly map: Readonly<Record<string, string>>
  readonly dlq: string
  readonly all: ReadonlyArray<string>
  readonly env: Readonly<Record<string, string>>
}

/** Unique topics for one scenario, created up front (3 partitions each). */
export const createScenarioTopics = async (brokers: string, label: string, eventTypes: ReadonlyArray<string>): Promise<ScenarioTopics> => {
  const run = `fault-${label}-${randomBytes(3).toString("hex")}`
  const map = Object.fromEntries(eventTypes.map((t) => [t, `${run}-${t}`]))
  const dlq = `${run}-dlq`
  const all = [...Object.values(map), dlq]
  await Effect.runPromise(ensureTopics(brokers.split(","), all))
  return { map, dlq, all, env: { TOPIC_MAP: JSON.stringify(map), DLQ_TOPIC: dlq } }
}

export const readAll = async (brokers: string, topics: ReadonlyArray<string>, timeoutMs = 30_000): Promise<ReadonlyArray<KafkaMessage>> => {
  const kafka = new Kafka({
    clientId: "outbox-fault-reader",
    brokers: brokers.split(","),
    // Its transient errors (coordinator not ready yet) are retried; a real failure throws.
    logLevel: KafkaLogLevel.NOTHING,
    retry: { retries: 8 },
  })
  const admin = kafka.admin()
  await admin.connect()
  const ends = new Map<string, number>()
  try {
    for (const topic of topics) {
      for (const p of await admin.fetchTopicOffsets(topic)) {
        if (Number(p.high) > Number(p.low)) ends.set(`${topic}/${p.partition}`, Number(p.high) - 1)
      }
    }
  } finally {
    await admin.disconnect()
  }
  const messages: Array<KafkaMessage> = []
  if (ends.size === 0) return messages
  const consumer = kafka.consumer({ groupId: `outbox-fault-reader-${randomBytes(6).toString("hex")}`, maxBytes: 16 * 1024 * 1024 })
  const remaining = new Set(ends.keys())
  let done: () => void = () => undefined
  const finished = new Promise<void>((resolve) => {
    done = resolve
  })
  await consumer.connect()
  try {
    await consumer.subscribe({ topics: [...topics], fromBeginning: true })
    await consumer.run({
      eachMessage: async ({ topic, partition, message }) => {
        const headers: Record<string, string> = {}
        for (const [k, v] of Object.entries(message.headers ?? {})) if (v !== undefined) headers[k] = v.toString()
        const offset = Number(message.offset)
        messages.push({
          topic,
          partition,
          offset,
          key: message.key?.toString() ?? null,
          value: message.value?.toString() ?? null,
          headers,
          timestamp: Number(message.timestamp),
        })
        const slot = `${topic}/${partition}`
        if (offset >= (ends.get(slot) ?? Number.POSITIVE_INFINITY)) remaining.delete(slot)
        if (remaining.size === 0) done()
      },
    })
    let timer: NodeJS.Timeout | undefined
    const timedOut = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, timeoutMs)
    })
    await Promise.race([finished, timedOut])
    clearTimeout(timer)
    if (remaining.size > 0) throw new Error(`read-back incomplete after ${timeoutMs} ms: ${[...remaining].join(", ")} not read to the end`)
  } finally {
    await consumer.disconnect()
  }
  return messages
}

// kafkajs' ConfigResourceTypes.TOPIC (not a named export under ESM).
const CONFIG_RESOURCE_TOPIC = 2

/** Lowers a topic's max.message.bytes, so the broker refuses what a default topic would take. */
export const limitTopic = async (brokers: string, topic: string, maxMessageBytes: number) => {
  const admin = new Kafka({ clientId: "outbox-fault-admin", brokers: brokers.split(","), logLevel: KafkaLogLevel.NOTHING }).admin()
  await admin.connect()
  try {
    await admin.alterConfigs({
      validateOnly: false,
      resources: [
        { type: CONFIG_RESOURCE_TOPIC, name: topic, configEntries: [{ name: "max.message.bytes", value: String(maxMessageBytes) }] },
      ],
    })
  } finally {
    await admin.disconnect()
  }
}
