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
 * Consumes from the beginning until `expected` messages arrived, then `settleMs` more
 * so duplicates beyond the expected count are seen too; gives up after `timeoutMs`.
 */
export const readTopics = (
  topics: ReadonlyArray<string>,
  options: { readonly expected: number; readonly timeoutMs?: number; readonly settleMs?: number },
): Effect.Effect<ReadonlyArray<ReadMessage>> =>
  Effect.promise(async () => {
    const kafka = new Kafka({ clientId: "outbox-relay-test-reader", brokers: inject("kafkaBrokers").split(","), logLevel: 1 })
    const consumer = kafka.consumer({ groupId: `test-reader-${randomBytes(6).toString("hex")}`, sessionTimeout: 10_000 })
    const messages: Array<ReadMessage> = []
    await consumer.connect()
    await consumer.subscribe({ topics: [...topics], fromBeginning: true })
    let reached: () => void = () => undefined
    const enough = new Promise<void>((resolve) => {
      reached = resolve
    })
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
        if (messages.length >= options.expected) reached()
      },
    })
    const timeout = new Promise<void>((resolve) => setTimeout(resolve, options.timeoutMs ?? 60_000))
    await Promise.race([enough, timeout])
    await new Promise((resolve) => setTimeout(resolve, options.settleMs ?? 1_500))
    await consumer.disconnect()
    return messages
  })

/** Unique topic names for one test, so runs never read each other's messages. */
export const testTopics = (eventTypes: ReadonlyArray<string>) => {
  const run = randomBytes(4).toString("hex")
  const map = Object.fromEntries(eventTypes.map((t) => [t, `test-${run}-${t}`]))
  return { map, dlq: `test-${run}-dlq`, all: [...Object.values(map), `test-${run}-dlq`] }
}
