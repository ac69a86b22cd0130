import { describe, expect, it } from "vitest"
import { describeKafkaProblem } from "../../src/kafka/startup-check.ts"

const plain = { kafkaBrokers: ["kafka-1:9092"], kafkaSsl: false }

describe("Kafka startup check: what an unreachable broker is blamed on", () => {
  it("names the setting to look at for each kind of connection error kafkajs reports", () => {
    expect(describeKafkaProblem("Connection error: getaddrinfo ENOTFOUND kafka-1", plain)).toContain(
      "a host name in KAFKA_BROKERS (kafka-1:9092) does not resolve",
    )
    expect(describeKafkaProblem("Connection error: connect ECONNREFUSED 10.0.0.1:9092", plain)).toContain(
      "nothing listens at KAFKA_BROKERS",
    )
    const tls = "Connection error: Client network socket disconnected before secure TLS connection was established"
    expect(describeKafkaProblem(tls, { ...plain, kafkaSsl: true })).toContain("KAFKA_SSL=true: does the broker's listener speak TLS")
    expect(
      describeKafkaProblem("KafkaJSProtocolError ILLEGAL_SASL_STATE: Request is not valid given the current SASL state", plain),
    ).toContain("check KAFKA_SASL_MECHANISM")
    expect(describeKafkaProblem("Connection timeout", plain)).toContain("no answer from KAFKA_BROKERS")
  })

  it("leaves a message it has no hint for as it is", () => {
    expect(describeKafkaProblem("The group is rebalancing", plain)).toBe("The group is rebalancing")
  })
})
