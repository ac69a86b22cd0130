/**
 * The one place configuration comes from. Every variable is declared here once; the
 * README's table and `outbox-relay --help` are checked against this list.
 */
import { isIP } from "node:net"
import { Context, Effect, Layer, Redacted, Result, Schema } from "effect"
import { isValidTopicName, mergeTopicMap, type TopicMap } from "../domain/event-types.ts"
import { type Env, type Setting, Settings } from "./settings.ts"

const readDatabaseUrl = (raw: string): Result.Result<Redacted.Redacted<string>, string> => {
  let url: URL
  try {
    url = new URL(raw)
  } catch {
    return Result.fail("must be a URL such as postgres://user:password@host:5432/db")
  }
  if (url.protocol !== "postgres:" && url.protocol !== "postgresql:") {
    return Result.fail(`must start with postgres:// or postgresql://, got ${url.protocol}//`)
  }
  if (url.hostname === "") return Result.fail("has no host name")
  return Result.succeed(Redacted.make(raw))
}

const BROKER = /^[a-zA-Z0-9.-]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$/
const readBrokers = (raw: string): Result.Result<ReadonlyArray<string>, string> => {
  const brokers = raw
    .split(",")
    .map((b) => b.trim())
    .filter((b) => b !== "")
  const bad = brokers.filter((b) => !BROKER.test(b) || Number(b.slice(b.lastIndexOf(":") + 1)) > 65535)
  if (brokers.length === 0) return Result.fail("must list at least one host:port")
  return bad.length > 0 ? Result.fail(`must be host:port entries, got ${bad.map((b) => `"${b}"`).join(", ")}`) : Result.succeed(brokers)
}

const TopicMapJson = Schema.fromJsonString(Schema.Record(Schema.String, Schema.String))
const readTopicMap = (raw: string): Result.Result<TopicMap, string> => {
  const decoded = Schema.decodeUnknownResult(TopicMapJson)(raw)
  if (Result.isFailure(decoded)) {
    return Result.fail(`must be a JSON object of event_type to topic, e.g. {"search_click":"clicks"} (${decoded.failure.message})`)
  }
  const bad = Object.entries(decoded.success).filter(([type, topic]) => type === "" || !isValidTopicName(topic))
  return bad.length > 0
    ? Result.fail(`has invalid entries: ${bad.map(([t, topic]) => `${JSON.stringify(t)} -> ${JSON.stringify(topic)}`).join(", ")}`)
    : Result.succeed(mergeTopicMap(decoded.success))
}

/** Redacted: webhook URLs often carry a token. */
const readHttpUrl = (raw: string): Result.Result<Redacted.Redacted<string>, string> => {
  try {
    const url = new URL(raw)
    return url.protocol === "http:" || url.protocol === "https:"
      ? Result.succeed(Redacted.make(raw))
      : Result.fail("must be an http(s) URL")
  } catch {
    return Result.fail("must be an http(s) URL")
  }
}

/** Plain (not redacted): an OTLP endpoint is an address; its credentials travel in OTEL_EXPORTER_OTLP_HEADERS. */
const readEndpointUrl = (raw: string): Result.Result<string, string> => {
  try {
    const url = new URL(raw)
    return url.protocol === "http:" || url.protocol === "https:" ? Result.succeed(raw) : Result.fail("must be an http(s) URL")
  } catch {
    return Result.fail("must be an http(s) URL")
  }
}

/** An IP address or a host name to bind to; the listen call itself says whether it is this machine's. */
const readHost = (raw: string): Result.Result<string, string> =>
  isIP(raw) !== 0 || /^[a-zA-Z0-9]([a-zA-Z0-9.-]*[a-zA-Z0-9])?$/.test(raw)
    ? Result.succeed(raw)
    : Result.fail(`must be an IP address or host name such as 127.0.0.1, 0.0.0.0 or ::, got "${raw}"`)

const topicCheck = (s: string) => (isValidTopicName(s) ? undefined : `must be a Kafka topic name ([a-zA-Z0-9._-], at most 249), got "${s}"`)

/** Declaration order is the order of the README table. */
export const settings = {
  databaseUrl: Settings.custom("DATABASE_URL", "PostgreSQL connection string", readDatabaseUrl, { secret: true }),
  kafkaBrokers: Settings.custom("KAFKA_BROKERS", "Comma-separated Kafka bootstrap servers, host:port", readBrokers, {}),
  kafkaClientId: Settings.string("KAFKA_CLIENT_ID", "Kafka client id", "outbox-relay"),
  kafkaSaslMechanism: Settings.optionalOneOf("KAFKA_SASL_MECHANISM", "SASL mechanism for real clusters", [
    "plain",
    "scram-sha-256",
    "scram-sha-512",
  ]),
  kafkaSaslUsername: Settings.optionalString("KAFKA_SASL_USERNAME", "SASL user name"),
  kafkaSaslPassword: Settings.optionalSecret("KAFKA_SASL_PASSWORD", "SASL password"),
  kafkaSsl: Settings.boolean("KAFKA_SSL", "Connect to Kafka over TLS", false),
  kafkaAutoCreateTopics: Settings.boolean(
    "KAFKA_AUTO_CREATE_TOPICS",
    "Ask the broker to create a missing topic on first publish (it does so only where auto.create.topics.enable is on)",
    true,
  ),
  pollIntervalMs: Settings.int("POLL_INTERVAL_MS", "Milliseconds between claims while idle", { min: 200, max: 1000, default: 500 }),
  busyPollIntervalMs: Settings.int(
    "BUSY_POLL_INTERVAL_MS",
    "Milliseconds between claims while rows keep arriving (until a POLL_INTERVAL_MS passes without any)",
    { min: 5, max: 1000, default: 20 },
  ),
  batchSize: Settings.int("BATCH_SIZE", "Rows claimed and published per batch", { min: 100, max: 1000, default: 500 }),
  leaseMs: Settings.int("LEASE_MS", "How long a claim is held before another instance may take it over", {
    min: 1000,
    max: 3_600_000,
    default: 30_000,
  }),
  publishTimeoutMs: Settings.int("PUBLISH_TIMEOUT_MS", "Time limit of one batch's publish; at most a third of LEASE_MS", {
    min: 500,
    max: 600_000,
    default: 10_000,
  }),
  maxRecordBytes: Settings.int(
    "MAX_RECORD_BYTES",
    "Largest event relayed: its whole record (payload and headers as JSON text, key, and the text columns sent as headers); a larger row is dead-lettered as message_too_large without being read. Keep it below the topics' max.message.bytes",
    // PostgreSQL's client refuses a result row over 16 MiB: a claim must never fetch one.
    { min: 1024, max: 15_000_000, default: 1_000_000 },
  ),
  maxAttempts: Settings.int("MAX_ATTEMPTS", "Publish attempts before an event is dead-lettered", { min: 1, max: 1000, default: 10 }),
  backoffBaseMs: Settings.int("BACKOFF_BASE_MS", "First retry delay; doubles per attempt, with jitter", {
    min: 10,
    max: 3_600_000,
    default: 500,
  }),
  backoffMaxMs: Settings.int("BACKOFF_MAX_MS", "Longest retry delay", { min: 10, max: 86_400_000, default: 300_000 }),
  topicMap: Settings.custom("TOPIC_MAP", "JSON object event_type → topic, merged over the defaults", readTopicMap, {
    default: { value: mergeTopicMap({}), text: "{}" },
  }),
  dlqTopic: Settings.string("DLQ_TOPIC", "Dead-letter topic", "outbox.dlq", topicCheck),
  shutdownGraceMs: Settings.int("SHUTDOWN_GRACE_MS", "On SIGTERM, how long the in-flight batch may take to finish before the relay stops", {
    min: 0,
    max: 600_000,
    default: 15_000,
  }),
  relayPaused: Settings.boolean("RELAY_PAUSED", "Start paused: no claims until resumed", false),
  httpPort: Settings.int("HTTP_PORT", "Port of health, readiness, metrics and admin endpoints (0 = any free port)", {
    min: 0,
    max: 65535,
    default: 8080,
  }),
  httpHost: Settings.optionalCustom(
    "HTTP_HOST",
    "Address HTTP_PORT is bound to, e.g. 127.0.0.1 to serve this host only; unset = every interface (IPv4 and IPv6)",
    readHost,
  ),
  adminToken: Settings.optionalSecret("ADMIN_TOKEN", "Bearer token for the admin API; unset = admin API off", (s) =>
    s.length < 16 ? "must be at least 16 characters" : undefined,
  ),
  retention: Settings.duration("RETENTION", "Age after which SENT rows are deleted (0 = keep)", "7d"),
  opsWebhookUrl: Settings.optionalCustom("OPS_WEBHOOK_URL", "Optional POST target for dead-letter tickets", readHttpUrl, true),
  logLevel: Settings.oneOf("LOG_LEVEL", "Minimum log level", ["trace", "debug", "info", "warn", "error", "fatal", "none"], "info"),
  logFormat: Settings.oneOf("LOG_FORMAT", "Log output: JSON lines or human-readable", ["json", "pretty"], "json"),
  sentLogLevel: Settings.oneOf(
    "SENT_LOG_LEVEL",
    "Level of the SENT line logged per relayed event (printed when LOG_LEVEL lets it through)",
    ["trace", "debug", "info", "warn"],
    "debug",
  ),
  listenNotify: Settings.boolean(
    "LISTEN_NOTIFY",
    "Claim at once when a row is inserted (LISTEN/NOTIFY); polling stays as the fallback",
    true,
  ),
  gaugeRefreshMs: Settings.int(
    "GAUGE_REFRESH_MS",
    "How often the backlog gauges (outbox_new_count, outbox_failed_count, outbox_relay_lag_seconds, the oldest-pending, stalled-key, dead-letter-waiting and stuck-row gauges) are read from the database",
    { min: 1000, max: 300_000, default: 5000 },
  ),
  keyStallMs: Settings.int(
    "KEY_STALL_MS",
    "Age of a key's oldest pending row past which the key counts in outbox_stalled_keys and `outbox-relay stuck` flags it",
    { min: 1000, max: 604_800_000, default: 900_000 },
  ),
  healthStallMs: Settings.int("HEALTH_STALL_MS", "/healthz answers 503 once the relay loop has completed no cycle for this long", {
    min: 1000,
    max: 3_600_000,
    default: 60_000,
  }),
  readyTimeoutMs: Settings.int("READY_TIMEOUT_MS", "Time limit of each /readyz check (database, Kafka)", {
    min: 100,
    max: 30_000,
    default: 2000,
  }),
  otelServiceName: Settings.string("OTEL_SERVICE_NAME", "service.name of exported traces and of the metrics' target_info", "outbox-relay"),
  otelEndpoint: Settings.optionalCustom(
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTLP/HTTP base URL; traces go to its /v1/traces. Tracing is off while this and the next are unset",
    readEndpointUrl,
  ),
  otelTracesEndpoint: Settings.optionalCustom(
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTLP/HTTP URL for traces, used as is (wins over OTEL_EXPORTER_OTLP_ENDPOINT)",
    readEndpointUrl,
  ),
  instanceId: Settings.optionalString(
    "RELAY_INSTANCE_ID",
    "Prefix of this instance's name in leases and logs (default: host name); pid and a random suffix are appended",
  ),
  dbPoolSize: Settings.int("DB_POOL_SIZE", "PostgreSQL connections in the pool", { min: 2, max: 100, default: 5 }),
} as const

type SettingsTable = typeof settings
export type RelayConfigShape = { readonly [K in keyof SettingsTable]: SettingsTable[K] extends Setting<infer A> ? A : never }

export interface ConfigProblem {
  readonly variable: string
  readonly message: string
}

const crossChecks = (c: RelayConfigShape): ReadonlyArray<ConfigProblem> => {
  const problems: Array<ConfigProblem> = []
  if (c.backoffMaxMs < c.backoffBaseMs) {
    problems.push({ variable: "BACKOFF_MAX_MS", message: `must be at least BACKOFF_BASE_MS (${c.backoffBaseMs})` })
  }
  if (c.publishTimeoutMs * 3 > c.leaseMs) {
    // A claimed batch may wait for the one ahead of it, then publish: both must fit in its lease.
    problems.push({
      variable: "PUBLISH_TIMEOUT_MS",
      message: `must be at most a third of LEASE_MS (${c.leaseMs}), or a lease can expire before its batch is published`,
    })
  }
  if (c.kafkaSaslMechanism !== undefined) {
    if (c.kafkaSaslUsername === undefined)
      problems.push({ variable: "KAFKA_SASL_USERNAME", message: "is required with KAFKA_SASL_MECHANISM" })
    if (c.kafkaSaslPassword === undefined)
      problems.push({ variable: "KAFKA_SASL_PASSWORD", message: "is required with KAFKA_SASL_MECHANISM" })
  }
  return problems
}

/** Pure: reads every setting, and reports every problem, not only the first. */
export const parseConfig = (env: Env): Result.Result<RelayConfigShape, ReadonlyArray<ConfigProblem>> => {
  const values: Record<string, unknown> = {}
  const problems: Array<ConfigProblem> = []
  for (const [key, setting] of Object.entries(settings) as Array<[string, Setting<unknown>]>) {
    const result = setting.read(env[setting.name])
    if (Result.isSuccess(result)) values[key] = result.success
    else problems.push({ variable: setting.name, message: result.failure })
  }
  if (problems.length > 0) return Result.fail(problems)
  const config = values as RelayConfigShape
  const crossProblems = crossChecks(config)
  return crossProblems.length > 0 ? Result.fail(crossProblems) : Result.succeed(config)
}

export class InvalidConfig extends Schema.TaggedError<InvalidConfig>()("InvalidConfig", {
  problems: Schema.Array(Schema.Struct({ variable: Schema.String, message: Schema.String })),
}) {
  override get message(): string {
    return `Invalid configuration:\n${this.problems.map((p) => `  - ${p.variable} ${p.message}`).join("\n")}`
  }
}

export class RelayConfig extends Context.Service<RelayConfig, RelayConfigShape>()("outbox-relay/RelayConfig") {
  static readonly fromEnv = (env: Env): Layer.Layer<RelayConfig, InvalidConfig> =>
    Layer.effect(
      RelayConfig,
      Effect.suspend(() => {
        const parsed = parseConfig(env)
        return Result.isSuccess(parsed) ? Effect.succeed(parsed.success) : Effect.fail(new InvalidConfig({ problems: parsed.failure }))
      }),
    )
  static readonly layer = Layer.suspend(() => RelayConfig.fromEnv(process.env))
}

/** Every setting as documentation sees it: the README table and its test read this. */
export const describeSettings = (): ReadonlyArray<{
  name: string
  description: string
  defaultText: string | undefined
  secret: boolean
}> =>
  Object.values(settings).map((s: Setting<unknown>) => ({
    name: s.name,
    description: s.description,
    defaultText: s.defaultText,
    secret: s.secret,
  }))
