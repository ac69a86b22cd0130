/** The kafkajs client built from configuration, with its logs routed into the Effect logger. */
import { Context, Effect, Layer, Redacted } from "effect"
import { RelayConfig } from "../config/config.ts"
import { Kafka, type KafkaConfig, KafkaLogLevel, type LogEntry, type SASLOptions } from "./kafkajs.ts"

// We bound the idempotent producer's retries on purpose (a send must end well within the
// lease); the relay retries with its own backoff and recreates the producer, so this
// warning would only be noise on every start.
const SUPPRESSED = ["Limiting retries for the idempotent producer"]

/**
 * Broker replies that kafkajs retries by itself and that are expected while a fresh broker
 * settles (its coordinators still loading, a leader election under way): kafkajs error codes
 * 14, 15, 16, 5 and 6, by the message kafkajs logs them with. kafkajs logs each one as an
 * error, e.g. the InitProducerId answer "The coordinator is loading…" on a broker's first
 * minute, which the demo printed among its SENT lines.
 */
export const SETTLING_BROKER_REPLIES: ReadonlyArray<string> = [
  "The coordinator is loading and hence can't process requests for this group",
  "The group coordinator is not available",
  "This is not the correct coordinator for this group",
  "There is no leader for this topic-partition as we are in the middle of a leadership election",
  "This server is not the leader for that topic-partition",
]

/**
 * The Effect log level of a kafkajs log entry. kafkajs reports every failed connection as an
 * error and every retried broker reply as a warning; whether that matters is the relay's call
 * (it retries and logs the outcome), so kafkajs' errors are warnings here, its warnings and the
 * replies of a settling broker are debug lines, and a few known-harmless lines are dropped.
 */
export const kafkajsLogLevel = (level: number, message: string, error: unknown): "Warning" | "Debug" | "None" => {
  if (SUPPRESSED.some((s) => message.startsWith(s))) return "None"
  if (typeof error === "string" && SETTLING_BROKER_REPLIES.includes(error)) return "Debug"
  return level <= KafkaLogLevel.ERROR ? "Warning" : "Debug"
}

export class KafkaClient extends Context.Service<KafkaClient, InstanceType<typeof Kafka>>()("outbox-relay/KafkaClient") {
  static readonly layer = Layer.effect(
    KafkaClient,
    Effect.gen(function* () {
      const config = yield* RelayConfig
      const context = yield* Effect.context<never>()
      const log = (entry: LogEntry) => {
        const { message, ...extra } = entry.log
        const level = kafkajsLogLevel(entry.level, message, extra.error)
        if (level === "None") return
        const effect = level === "Warning" ? Effect.logWarning(message) : Effect.logDebug(message)
        Effect.runForkWith(context)(
          effect.pipe(Effect.annotateLogs({ ...extra, source: entry.namespace ? `kafkajs.${entry.namespace}` : "kafkajs" })),
        )
      }
      const sasl: SASLOptions | undefined =
        config.kafkaSaslMechanism !== undefined && config.kafkaSaslUsername !== undefined && config.kafkaSaslPassword !== undefined
          ? ({
              mechanism: config.kafkaSaslMechanism,
              username: config.kafkaSaslUsername,
              password: Redacted.value(config.kafkaSaslPassword),
            } as SASLOptions)
          : undefined
      const kafkaConfig: KafkaConfig = {
        clientId: config.kafkaClientId,
        brokers: [...config.kafkaBrokers],
        ssl: config.kafkaSsl,
        connectionTimeout: 3_000,
        // A send must end well within the lease: kafkajs' own retries get a third of the budget each.
        requestTimeout: Math.max(1_000, Math.floor(config.publishTimeoutMs / 3)),
        retry: { retries: 2, initialRetryTime: 100, maxRetryTime: 1_000 },
        logLevel: KafkaLogLevel.WARN,
        logCreator: () => log,
        ...(sasl === undefined ? {} : { sasl }),
      }
      return new Kafka(kafkaConfig)
    }),
  )
}
