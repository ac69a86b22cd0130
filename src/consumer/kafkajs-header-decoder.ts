/**
 * Whether the kafkajs this process loaded decodes record headers in linear time. Unpatched
 * kafkajs 2.2.4 rebuilds the headers object for every header (a reduce with object spread):
 * 10,000 headers on one message take about two minutes, during which the member sends no
 * heartbeat and the message wanders from member to member. scripts/patch-kafkajs.mjs fixes
 * it at install; a service that installed outbox-relay as a dependency must ask for it.
 */
import { readFileSync } from "node:fs"
import { createRequire } from "node:module"

const MARKER = "/* outbox-relay patch */"
const DECODER = "kafkajs/src/protocol/recordBatch/record/v0/decoder.js"

export const kafkajsHeaderDecoderPatched = (): boolean => {
  try {
    return readFileSync(createRequire(import.meta.url).resolve(DECODER), "utf8").startsWith(MARKER)
  } catch {
    // Another kafkajs layout: nothing known to say.
    return true
  }
}
