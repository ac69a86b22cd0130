/** The kafkajs client built from configuration, with its logs routed into the Effect logger. */
import { Context, Effect, Layer, Redacted } from "effect"
import { RelayConfig } from "../config/config.ts"
import { Kafka, type KafkaConfig, KafkaLogLevel, type LogEntry, type SASLOptions } from "./kafkajs.ts"

// We bound the idempotent producer's retries on purpose (a send must end well within the
// lease); the relay retries with its own backoff and recreates the producer, so this
// warning would only be noise on every start.
const SUPPRESSED = ["Limiting retries for the idempotent producer"]

export class KafkaClient extends Context.Service<KafkaClient, InstanceType<typeof Kafka>>()("outbox-relay/KafkaClient") {
  static readonly layer = Layer.effect(
    KafkaClient,
    Effect.gen(function* () {
      const config = yield* RelayConfig
      const context = yield* Effect.context<never>()
      const log = (entry: LogEntry) => {
        const { message, ...extra } = entry.log
        if (SUPPRESSED.some((s) => message.startsWith(s))) return
        // kafkajs reports every failed connection as an error and every retried broker reply as
        // a warning; whether that matters is the relay's call (it retries and logs the outcome),
        // so kafkajs' errors are warnings here and its warnings are debug lines.
        const effect = entry.level <= KafkaLogLevel.ERROR ? Effect.logWarning(message) : Effect.logDebug(message)
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
