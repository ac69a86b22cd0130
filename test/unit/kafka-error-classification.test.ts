import { describe, expect, it } from "vitest"
import { classifyKafkaError } from "../../src/kafka/error-classification.ts"

// Shapes as kafkajs throws them: protocol errors carry `type`, wrappers carry `cause`/`originalError`.
const protocolError = (type: string) => Object.assign(new Error(`broker said ${type}`), { name: "KafkaJSProtocolError", type })
const retriesExceeded = (cause: Error) => Object.assign(new Error("retries exceeded"), { name: "KafkaJSNumberOfRetriesExceeded", cause })

describe("kafka error classification", () => {
  it("treats a too-large or invalid record as permanent, even when wrapped", () => {
    const tooLarge = classifyKafkaError(retriesExceeded(protocolError("MESSAGE_TOO_LARGE")))
    expect(tooLarge._tag).toBe("KafkaRejected")
    expect(tooLarge._tag === "KafkaRejected" && tooLarge.reason).toBe("message_too_large")
    const invalid = classifyKafkaError(
      Object.assign(new Error("agg"), { name: "KafkaJSAggregateError", errors: [protocolError("CORRUPT_MESSAGE")] }),
    )
    expect(invalid._tag === "KafkaRejected" && invalid.reason).toBe("invalid_record")
  })

  it("treats connection loss, timeouts and leader moves as retryable", () => {
    for (const e of [
      Object.assign(new Error("Connection error: connect ECONNREFUSED"), { name: "KafkaJSConnectionError" }),
      Object.assign(new Error("Request timed out"), { name: "KafkaJSRequestTimeoutError" }),
      retriesExceeded(protocolError("NOT_LEADER_OR_FOLLOWER")),
    ]) {
      const c = classifyKafkaError(e)
      expect(c._tag).toBe("KafkaUnavailable")
      expect(c._tag === "KafkaUnavailable" && c.reason).toBe("unreachable")
    }
  })

  it("flags sequence and producer-id errors so the producer is recreated", () => {
    for (const type of ["OUT_OF_ORDER_SEQUENCE_NUMBER", "UNKNOWN_PRODUCER_ID", "INVALID_PRODUCER_EPOCH"]) {
      const c = classifyKafkaError(retriesExceeded(protocolError(type)))
      expect(c._tag === "KafkaUnavailable" && c.reason).toBe("producer_broken")
    }
  })

  it("tells a missing topic apart, so only its events wait and the rest of the batch goes on", () => {
    const c = classifyKafkaError(retriesExceeded(protocolError("UNKNOWN_TOPIC_OR_PARTITION")))
    expect(c._tag).toBe("KafkaUnknownTopic")
  })

  it("treats anything unrecognised as retryable", () => {
    expect(classifyKafkaError(new Error("???"))._tag).toBe("KafkaUnavailable")
    expect(classifyKafkaError("a string")._tag).toBe("KafkaUnavailable")
  })
})
