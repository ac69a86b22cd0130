import { Redacted, Result } from "effect"
import { describe, expect, it } from "vitest"
import { parseConfig } from "../../src/config/config.ts"
import { parseDurationMs } from "../../src/config/settings.ts"
import { DEFAULT_TOPIC_MAP } from "../../src/domain/event-types.ts"
import { otlpTracesUrl, traceExportOf } from "../../src/telemetry/trace-export-settings.ts"

const valid = { DATABASE_URL: "postgres://app:s3cret@db:5432/app", KAFKA_BROKERS: "k1:9092, k2:9092" }

const problems = (env: Record<string, string>) => {
  const parsed = parseConfig(env)
  return Result.isFailure(parsed) ? parsed.failure.map((p) => p.variable) : []
}

describe("configuration", () => {
  it("applies the documented defaults", () => {
    const c = Result.getOrThrow(parseConfig(valid))
    expect(c.kafkaBrokers).toEqual(["k1:9092", "k2:9092"])
    expect(c.pollIntervalMs).toBe(500)
    expect(c.batchSize).toBe(500)
    expect(c.leaseMs).toBe(30_000)
    expect(c.maxAttempts).toBe(10)
    expect(c.backoffBaseMs).toBe(500)
    expect(c.backoffMaxMs).toBe(300_000)
    expect(c.dlqTopic).toBe("outbox.dlq")
    expect(c.relayPaused).toBe(false)
    expect(c.httpPort).toBe(8080)
    expect(c.httpHost).toBeUndefined()
    expect(c.retention).toBe(7 * 86_400_000)
    expect(c.logLevel).toBe("info")
    expect(c.logFormat).toBe("json")
    expect(c.topicMap).toEqual(DEFAULT_TOPIC_MAP)
    expect(c.sentLogLevel).toBe("debug")
    expect(c.listenNotify).toBe(true)
    expect(c.gaugeRefreshMs).toBe(5000)
    expect(c.healthStallMs).toBe(60_000)
    expect(c.readyTimeoutMs).toBe(2000)
    expect(c.otelServiceName).toBe("outbox-relay")
    expect(c.otelEndpoint).toBeUndefined()
    expect(c.otelTracesEndpoint).toBeUndefined()
  })

  it("turns tracing on only with an OTLP endpoint; the traces URL wins over the base URL", () => {
    const url = (env: Record<string, string>) => otlpTracesUrl(Result.getOrThrow(parseConfig({ ...valid, ...env })))
    expect(url({})).toBeUndefined()
    expect(url({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318/" })).toBe("http://collector:4318/v1/traces")
    expect(url({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "https://t.example/in" })).toBe(
      "https://t.example/in",
    )
  })

  it("chooses the exporter as the OpenTelemetry SDKs do: protobuf by default, the traces-specific variable wins", () => {
    const choice = (env: Record<string, string>) => traceExportOf(Result.getOrThrow(parseConfig({ ...valid, ...env })))
    // Unset with no endpoint: off, as before OTEL_TRACES_EXPORTER was read.
    expect(choice({})).toEqual({ _tag: "none" })
    expect(choice({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318", OTEL_TRACES_EXPORTER: "none" })).toEqual({ _tag: "none" })
    expect(choice({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318" })).toEqual({
      _tag: "otlp",
      url: "http://c:4318/v1/traces",
      protocol: "http/protobuf",
      headers: {},
      timeoutMs: 10_000,
    })
    expect(choice({ OTEL_TRACES_EXPORTER: "otlp" })).toMatchObject({ url: "http://localhost:4318/v1/traces" })
    expect(
      choice({
        OTEL_TRACES_EXPORTER: "otlp",
        OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf",
        OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "http/json",
        OTEL_EXPORTER_OTLP_HEADERS: "authorization=Bearer%20abc,x-a=1",
        OTEL_EXPORTER_OTLP_TRACES_HEADERS: "x-a=2",
        OTEL_EXPORTER_OTLP_TIMEOUT: "5000",
        OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: "2000",
      }),
    ).toMatchObject({ protocol: "http/json", headers: { authorization: "Bearer abc", "x-a": "2" }, timeoutMs: 2000 })
    expect(choice({ OTEL_TRACES_EXPORTER: "zipkin" })).toEqual({
      _tag: "zipkin",
      url: "http://localhost:9411/api/v2/spans",
      timeoutMs: 10_000,
    })
    expect(choice({ OTEL_TRACES_EXPORTER: "ZIPKIN", OTEL_EXPORTER_ZIPKIN_ENDPOINT: "http://z:9411/api/v2/spans" })).toMatchObject({
      url: "http://z:9411/api/v2/spans",
    })
    expect(choice({ OTEL_TRACES_EXPORTER: "console" })).toEqual({ _tag: "console" })
  })

  it("never prints OTLP headers: they carry the backend's credentials", () => {
    const c = Result.getOrThrow(parseConfig({ ...valid, OTEL_EXPORTER_OTLP_HEADERS: "authorization=Bearer%20topsecret" }))
    expect(JSON.stringify(c)).not.toContain("topsecret")
  })

  it("keeps secrets redacted in every rendering", () => {
    const c = Result.getOrThrow(
      parseConfig({ ...valid, KAFKA_SASL_MECHANISM: "plain", KAFKA_SASL_USERNAME: "u", KAFKA_SASL_PASSWORD: "hunter2hunter2" }),
    )
    const rendered = `${JSON.stringify(c)} ${String(c.databaseUrl)} ${String(c.kafkaSaslPassword)}`
    expect(rendered).not.toContain("s3cret")
    expect(rendered).not.toContain("hunter2")
    expect(Redacted.value(c.databaseUrl)).toBe(valid.DATABASE_URL)
  })

  it("names every missing required variable at once", () => {
    expect(problems({})).toEqual(["DATABASE_URL", "KAFKA_BROKERS"])
  })

  it.each([
    ["BATCH_SIZE", "0"],
    ["BATCH_SIZE", "5000"],
    ["BATCH_SIZE", "12.5"],
    ["POLL_INTERVAL_MS", "199"],
    ["POLL_INTERVAL_MS", "1001"],
    ["LOG_FORMAT", "xml"],
    ["LOG_LEVEL", "loud"],
    ["RELAY_PAUSED", "maybe"],
    ["DATABASE_URL", "mysql://db/app"],
    ["DATABASE_URL", "not a url"],
    ["KAFKA_BROKERS", "localhost"],
    ["TOPIC_MAP", "{not json"],
    ["TOPIC_MAP", '{"search_click": 5}'],
    ["TOPIC_MAP", '{"search_click": "bad topic!"}'],
    ["DLQ_TOPIC", "dead letters"],
    ["RETENTION", "a week"],
    ["ADMIN_TOKEN", "short"],
    ["OPS_WEBHOOK_URL", "ftp://x"],
    ["KAFKA_SASL_MECHANISM", "kerberos"],
    ["SENT_LOG_LEVEL", "loud"],
    ["LISTEN_NOTIFY", "maybe"],
    ["GAUGE_REFRESH_MS", "10"],
    ["HEALTH_STALL_MS", "0"],
    ["READY_TIMEOUT_MS", "99999"],
    ["OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"],
    ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "grpc://collector:4317"],
    ["OTEL_TRACES_EXPORTER", "jaeger"],
    ["OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"],
    ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "thrift"],
    ["OTEL_EXPORTER_OTLP_HEADERS", "no-equals-sign"],
    ["OTEL_EXPORTER_OTLP_TIMEOUT", "fast"],
    ["OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "0"],
    ["OTEL_EXPORTER_ZIPKIN_ENDPOINT", "zipkin:9411"],
    ["OTEL_TRACES_SAMPLER", "sometimes"],
    ["OTEL_TRACES_SAMPLER_ARG", "1.5"],
    ["HTTP_HOST", "http://127.0.0.1"],
    ["HTTP_HOST", "127.0.0.1:8080"],
  ])("rejects %s=%s naming the variable", (name, value) => {
    expect(problems({ ...valid, [name]: value })).toEqual([name])
  })

  it("reports several invalid variables in one message", () => {
    expect(problems({ ...valid, BATCH_SIZE: "5000", POLL_INTERVAL_MS: "50", LOG_FORMAT: "xml" })).toEqual([
      "POLL_INTERVAL_MS",
      "BATCH_SIZE",
      "LOG_FORMAT",
    ])
  })

  it("checks settings that depend on each other", () => {
    expect(problems({ ...valid, BACKOFF_BASE_MS: "1000", BACKOFF_MAX_MS: "500" })).toEqual(["BACKOFF_MAX_MS"])
    expect(problems({ ...valid, LEASE_MS: "5000", PUBLISH_TIMEOUT_MS: "2000" })).toEqual(["PUBLISH_TIMEOUT_MS"])
    expect(problems({ ...valid, KAFKA_SASL_MECHANISM: "plain" })).toEqual(["KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"])
  })

  it("reads HTTP_HOST as an address or host name to bind", () => {
    for (const host of ["127.0.0.1", "0.0.0.0", "::", "::1", "localhost", "relay-0.internal"]) {
      expect(Result.getOrThrow(parseConfig({ ...valid, HTTP_HOST: host })).httpHost).toBe(host)
    }
  })

  it("merges TOPIC_MAP over the defaults", () => {
    const c = Result.getOrThrow(parseConfig({ ...valid, TOPIC_MAP: '{"search_click":"clicks","order_placed":"orders"}' }))
    expect(c.topicMap.search_click).toBe("clicks")
    expect(c.topicMap.order_placed).toBe("orders")
    expect(c.topicMap.search_dwell).toBe(DEFAULT_TOPIC_MAP.search_dwell)
  })

  it("reads durations with units", () => {
    expect(Result.getOrThrow(parseDurationMs("7d"))).toBe(604_800_000)
    expect(Result.getOrThrow(parseDurationMs("90s"))).toBe(90_000)
    expect(Result.getOrThrow(parseDurationMs("0"))).toBe(0)
    expect(Result.isFailure(parseDurationMs("7 weeks"))).toBe(true)
  })
})
