import { createRequire } from "node:module"
import { describe, expect, it } from "vitest"
import { kafkajsLogLevel, SETTLING_BROKER_REPLIES } from "../../src/kafka/kafka-client.ts"
import { KafkaLogLevel } from "../../src/kafka/kafkajs.ts"

// kafkajs' table of broker error codes (CommonJS internals, read as the kafkajs-patch test does).
const require = createRequire(import.meta.url)
const { errorCodes } = require(require.resolve("kafkajs/src/protocol/error.js")) as {
  errorCodes: ReadonlyArray<{ type: string; code: number; retriable: boolean; message: string }>
}

describe("kafkajs log lines in the relay's log", () => {
  it("puts a settling broker's replies at debug: coordinator loading, leader election", () => {
    // As kafkajs logged it in the demo against a broker started a few seconds before.
    expect(kafkajsLogLevel(KafkaLogLevel.ERROR, "Response InitProducerId(key: 22, version: 1)", SETTLING_BROKER_REPLIES[0])).toBe("Debug")
    for (const reply of SETTLING_BROKER_REPLIES)
      expect(kafkajsLogLevel(KafkaLogLevel.ERROR, "Response Produce(key: 0, version: 7)", reply)).toBe("Debug")
  })

  it("still shows failed connections and every other broker error as warnings", () => {
    expect(
      kafkajsLogLevel(KafkaLogLevel.ERROR, "Connection error: connect ECONNREFUSED 127.0.0.1:9", "connect ECONNREFUSED 127.0.0.1:9"),
    ).toBe("Warning")
    expect(
      kafkajsLogLevel(KafkaLogLevel.ERROR, "Response Produce(key: 0, version: 7)", "This server does not host this topic-partition"),
    ).toBe("Warning")
    expect(kafkajsLogLevel(KafkaLogLevel.ERROR, "Response SaslAuthenticate(key: 36, version: 1)", "SASL PLAIN authentication failed")).toBe(
      "Warning",
    )
    expect(kafkajsLogLevel(KafkaLogLevel.WARN, "Retrying request", undefined)).toBe("Debug")
  })

  it("knows the settling replies by kafkajs' own messages for retriable codes 5, 6, 14, 15 and 16", () => {
    const byCode = [5, 6, 14, 15, 16].map((code) => errorCodes.find((e) => e.code === code))
    for (const e of byCode) expect(e?.retriable).toBe(true)
    expect([...SETTLING_BROKER_REPLIES].sort()).toEqual(byCode.map((e) => e?.message).sort())
  })
})
