#!/usr/bin/env node
/**
 * Reads a topic from its beginning until `expected` records arrived (or 30 s passed) and prints
 * what it found: "<n> distinct <first>..<last>" of the records' dedup_key headers, numerically
 * sorted. Used by scripts/container-smoke.sh to read back what the relay in the container sent.
 *
 *   node scripts/read-topic.mjs BROKERS TOPIC EXPECTED
 */
import { randomBytes } from "node:crypto"
import kafkajs from "kafkajs"

const [brokers, topic, expectedText] = process.argv.slice(2)
const expected = Number(expectedText)
if (!brokers || !topic || !Number.isInteger(expected)) {
  process.stderr.write("usage: read-topic.mjs BROKERS TOPIC EXPECTED\n")
  process.exit(2)
}

const kafka = new kafkajs.Kafka({ clientId: "read-topic", brokers: brokers.split(","), logLevel: kafkajs.logLevel.ERROR })
const consumer = kafka.consumer({ groupId: `read-topic-${randomBytes(4).toString("hex")}` })
const keys = new Set()
let records = 0
const done = Promise.withResolvers()
const timer = setTimeout(done.resolve, 30_000)

await consumer.connect()
await consumer.subscribe({ topic, fromBeginning: true })
await consumer.run({
  eachMessage: async ({ message }) => {
    records++
    keys.add(message.headers?.dedup_key?.toString() ?? "(no dedup_key)")
    if (records >= expected) done.resolve()
  },
})
await done.promise
clearTimeout(timer)
await consumer.disconnect()

const sorted = [...keys].sort((a, b) => Number(a.replace(/\D/g, "")) - Number(b.replace(/\D/g, "")))
const duplicates = records - keys.size
process.stdout.write(`${keys.size} distinct ${sorted[0]}..${sorted.at(-1)}${duplicates > 0 ? ` (+${duplicates} duplicates)` : ""}\n`)
