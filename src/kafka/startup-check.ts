/**
 * At start, asks the cluster whether it answers (Publisher.checkReachable), so a broker
 * that cannot be reached or authenticated is reported at once, not only when the first
 * event waits for it: an idle relay would otherwise say nothing. Retried with backoff
 * until it answers; the first failure, a change of reason and the recovery are logged.
 * Then the dead-letter topic is looked up: missing with KAFKA_AUTO_CREATE_TOPICS=false, it is a WARN.
 */
import { Duration, Effect, Layer, Ref, Schedule, Schema } from "effect"
import { RelayConfig, type RelayConfigShape } from "../config/config.ts"
import { classifyKafkaError } from "./error-classification.ts"
import { KafkaClient } from "./kafka-client.ts"
import { Publisher } from "./publisher.ts"

/**
 * The likely misconfiguration behind a kafkajs connection error, in the operator's terms
 * (which variable to look at); undefined when the message says enough by itself.
 */
export const kafkaProblemHint = (message: string, config: Pick<RelayConfigShape, "kafkaBrokers" | "kafkaSsl">): string | undefined => {
  const brokers = config.kafkaBrokers.join(",")
  if (/ENOTFOUND|EAI_AGAIN/.test(message)) return `a host name in KAFKA_BROKERS (${brokers}) does not resolve`
  if (/ECONNREFUSED/.test(message)) return `nothing listens at KAFKA_BROKERS (${brokers})`
  if (/TLS|SSL|certificate|EPROTO/i.test(message)) {
    return config.kafkaSsl
      ? "KAFKA_SSL=true: does the broker's listener speak TLS, and is its certificate trusted?"
      : "the broker's listener may require TLS: set KAFKA_SSL=true"
  }
  if (/SASL|authenticat/i.test(message)) {
    return "SASL failed: check KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD, and that the broker's listener has SASL on"
  }
  if (/timed? ?out/i.test(message))
    return `no answer from KAFKA_BROKERS (${brokers}): a firewall, or TLS/SASL settings that do not match the listener?`
  return undefined
}

/** The error text with its hint, as the log and /readyz give it. */
export const describeKafkaProblem = (message: string, config: Pick<RelayConfigShape, "kafkaBrokers" | "kafkaSsl">): string => {
  const hint = kafkaProblemHint(message, config)
  return hint === undefined ? message : `${message} (${hint})`
}

/** What to do about a dead-letter topic the broker does not have, given whether the relay asks for topics to be created. */
export const deadLetterTopicHint = (config: Pick<RelayConfigShape, "dlqTopic" | "kafkaAutoCreateTopics">): string =>
  config.kafkaAutoCreateTopics
    ? `the broker creates it on first publish only where auto.create.topics.enable is on (KAFKA_AUTO_CREATE_TOPICS=true): create it, or check the broker's setting and that it is reachable`
    : `KAFKA_AUTO_CREATE_TOPICS=false, so the relay does not ask the broker to create it: create the topic, or set DLQ_TOPIC to one that exists`

// One attempt may not hang the check: a TLS handshake against a plaintext port can stall.
const ATTEMPT_TIMEOUT = Duration.seconds(15)

/** The cluster did not answer the startup check; `message` has the reason and its hint. */
export class KafkaNotReachable extends Schema.TaggedError<KafkaNotReachable>()("KafkaNotReachable", {
  message: Schema.String,
}) {}

export const KafkaStartupCheck = Layer.effectDiscard(
  Effect.gen(function* () {
    const publisher = yield* Publisher
    const kafka = yield* KafkaClient
    const config = yield* RelayConfig
    const brokers = config.kafkaBrokers.join(",")
    // The reason last logged: a retry failing the same way stays quiet.
    const lastProblem = yield* Ref.make<string | undefined>(undefined)

    const attempt = publisher.checkReachable.pipe(
      Effect.mapError((e) => new KafkaNotReachable({ message: describeKafkaProblem(e.message, config) })),
      Effect.timeoutOrElse({
        duration: ATTEMPT_TIMEOUT,
        orElse: () =>
          Effect.fail(
            new KafkaNotReachable({
              message: describeKafkaProblem(`timed out after ${Duration.toMillis(ATTEMPT_TIMEOUT)} ms`, config),
            }),
          ),
      }),
      Effect.tapError((e) =>
        Effect.gen(function* () {
          const previous = yield* Ref.getAndSet(lastProblem, e.message)
          if (previous === e.message) {
            return yield* Effect.logDebug("Kafka still not reachable").pipe(Effect.annotateLogs({ error: e.message }))
          }
          yield* Effect.logError(previous === undefined ? "Kafka is not reachable" : "Kafka is not reachable (new reason)").pipe(
            Effect.annotateLogs({ brokers, error: e.message }),
          )
        }),
      ),
      Effect.tap(() =>
        Effect.gen(function* () {
          const wasDown = (yield* Ref.get(lastProblem)) !== undefined
          yield* wasDown
            ? Effect.logInfo("Kafka is reachable again").pipe(Effect.annotateLogs({ brokers }))
            : Effect.logDebug("Kafka reachable").pipe(Effect.annotateLogs({ brokers }))
        }),
      ),
    )
    // 1 s, 2 s, 4 s … capped at 30 s: quick to see a fixed broker, quiet while it stays broken.
    const backoff = Schedule.exponential(Duration.seconds(1)).pipe((exp) => Schedule.min([exp, Schedule.spaced(Duration.seconds(30))]))
    // Asked once the cluster answers: a dead-letter topic that does not exist is found at start,
    // not when the first poison event has to wait for it (its rows then hold their keys).
    // Admin metadata never creates a topic: this asks whether it exists now.
    const deadLetterTopicExists = Effect.acquireUseRelease(
      Effect.sync(() => kafka.admin()),
      (admin) =>
        Effect.tryPromise({
          try: async () => {
            await admin.connect()
            await admin.fetchTopicMetadata({ topics: [config.dlqTopic] })
          },
          catch: classifyKafkaError,
        }).pipe(
          Effect.as(true),
          Effect.catchTag("KafkaUnknownTopic", () => Effect.succeed(false)),
          Effect.timeout(ATTEMPT_TIMEOUT),
        ),
      (admin) => Effect.promise(() => admin.disconnect().catch(() => undefined)).pipe(Effect.timeout("5 seconds"), Effect.ignore),
    )
    const checkDeadLetterTopic = deadLetterTopicExists.pipe(
      Effect.flatMap((exists) => {
        if (exists) return Effect.logDebug("dead-letter topic exists").pipe(Effect.annotateLogs({ dlq_topic: config.dlqTopic }))
        const log = config.kafkaAutoCreateTopics ? Effect.logInfo : Effect.logWarning
        return log(`dead-letter topic "${config.dlqTopic}" (DLQ_TOPIC) does not exist: ${deadLetterTopicHint(config)}`).pipe(
          Effect.annotateLogs({ dlq_topic: config.dlqTopic, kafka_auto_create_topics: config.kafkaAutoCreateTopics }),
        )
      }),
      Effect.catch((e) => Effect.logDebug("dead-letter topic not checked").pipe(Effect.annotateLogs({ error: e.message }))),
    )
    // The schedule never ends, so no failure gets past the retry: `ignore` only drops the error type.
    yield* Effect.forkScoped(
      attempt.pipe(Effect.retry(backoff), Effect.ignore, Effect.andThen(checkDeadLetterTopic), Effect.withTracerEnabled(false)),
    )
  }),
).pipe(Layer.provide(KafkaClient.layer))
