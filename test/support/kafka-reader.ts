/** Reads topics back with a real consumer, so tests prove what reached Kafka, not what the relay says it sent. */
import { randomBytes } from "node:crypto"
import { Effect } from "effect"
import { inject } from "vitest"
import { Kafka } from "../../src/kafka/kafkajs.ts"

export interface ReadMessage {
  readonly topic: string
  readonly partition: number
  readonly offset: string
  readonly key: string | null
  readonly value: string | null
  readonly headers: Readonly<Record<string, string>>
}

/**
 * Consumes from the beginning until `expected` messages arrived, then on to the end offset
 * each partition has at that moment, so duplicates beyond the expected count are seen too
 * without a waiting window; gives up after `timeoutMs`. Callers read once the table says the
 * relay is done (every row SENT): whatever it sent is then below those end offsets.
 */
export const readTopics = (
  topics: ReadonlyArray<string>,
  options: { readonly expected: number; readonly timeoutMs?: number },
): Effect.Effect<ReadonlyArray<ReadMessage>> =>
  Effect.promise(async () => {
    const kafka = new Kafka({ clientId: "outbox-relay-test-reader", brokers: inject("kafkaBrokers").split(","), logLevel: 1 })
    const consumer = kafka.consumer({ groupId: `test-reader-${randomBytes(6).toString("hex")}`, sessionTimeout: 10_000 })
    const messages: Array<ReadMessage> = []
    const consumed = new Map<string, number>()
    let check: () => void = () => undefined
    await consumer.connect()
    await consumer.subscribe({ topics: [...topics], fromBeginning: true })
    await consumer.run({
      eachMessage: async ({ topic, partition, message }) => {
        const headers: Record<string, string> = {}
        for (const [k, v] of Object.entries(message.headers ?? {})) if (v !== undefined) headers[k] = v.toString()
        messages.push({
          topic,
          partition,
          offset: message.offset,
          key: message.key?.toString() ?? null,
          value: message.value?.toString() ?? null,
          headers,
        })
        consumed.set(`${topic}/${partition}`, Number(message.offset) + 1)
        check()
      },
    })
    const deadline = Date.now() + (options.timeoutMs ?? 60_000)
    const until = (done: () => boolean) =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(0, deadline - Date.now()))
        check = () => {
          if (done()) {
            clearTimeout(timer)
            resolve()
          }
        }
        check()
      })
    await until(() => messages.length >= options.expected)
    const admin = kafka.admin()
    await admin.connect()
    const ends = new Map<string, number>()
    for (const topic of topics) for (const p of await admin.fetchTopicOffsets(topic)) ends.set(`${topic}/${p.partition}`, Number(p.high))
    await admin.disconnect()
    await until(() => [...ends].every(([slot, end]) => (consumed.get(slot) ?? 0) >= end))
    await consumer.disconnect()
    return messages
  })

/** Unique topic names for one test, so runs never read each other's messages. */
export const testTopics = (eventTypes: ReadonlyArray<string>) => {
  const run = randomBytes(4).toString("hex")
  const map = Object.fromEntries(eventTypes.map((t) => [t, `test-${run}-${t}`]))
  return { map, dlq: `test-${run}-dlq`, all: [...Object.values(map), `test-${run}-dlq`] }
}
