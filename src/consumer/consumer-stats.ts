/** What the consumer did, as Effect metrics (per consumer group) and as a snapshot for tests and status pages. */
import { Effect, Metric, Ref } from "effect"

export const consumerProcessed = Metric.counter("outbox_consumer_processed_total", {
  description: "Messages whose handler transaction committed",
  incremental: true,
})
export const consumerDuplicates = Metric.counter("outbox_consumer_duplicates_total", {
  description: "Messages skipped because their dedup key was already in the inbox",
  incremental: true,
})
export const consumerDeadLetters = Metric.counter("outbox_consumer_dead_letters_total", {
  description: "Messages published to the consumer's dead-letter topic",
  incremental: true,
})
export const consumerDeadLettersTrimmed = Metric.counter("outbox_consumer_dead_letters_trimmed_total", {
  description: "Dead letters the dead-letter topic refused whole and took trimmed (value, or value, key and headers omitted)",
  incremental: true,
})
export const consumerDeadLettersInTable = Metric.counter("outbox_consumer_dead_letters_in_table_total", {
  description: "Dead letters the dead-letter topic refused even trimmed, recorded in the consumer_dead_letter table instead",
  incremental: true,
})
export const consumerHandlerTimeouts = Metric.counter("outbox_consumer_handler_timeouts_total", {
  description: "Handler attempts cut off by handlerTimeout (each counts as a handler failure too)",
  incremental: true,
})
export const consumerHandlerFailures = Metric.counter("outbox_consumer_handler_failures_total", {
  description: "Handler attempts that failed (each is retried until the retry budget is spent)",
  incremental: true,
})
export const consumerDatabaseOutages = Metric.counter("outbox_consumer_database_outages_total", {
  description: "Attempts that met an inbox database outage (connection lost, server shutting down) and waited in place",
  incremental: true,
})
export const consumerKafkaRestarts = Metric.counter("outbox_consumer_kafka_restarts_total", {
  description: "Times kafkajs crashed and restarted the consumer",
  incremental: true,
})
export const consumerInboxExpired = Metric.counter("outbox_consumer_inbox_expired_total", {
  description: "Inbox keys deleted after the retention",
  incremental: true,
})

/** Age of the message in flight on each partition (0 when none): a stuck handler shows here before it shows as lag. */
export const consumerOldestInFlight = Metric.gauge("outbox_consumer_oldest_in_flight_seconds", {
  description: "Seconds the message in flight on a partition has been processing (0 when none)",
})

export interface ConsumerStats {
  readonly processed: number
  readonly duplicates: number
  readonly deadLettered: number
  readonly deadLettersTrimmed: number
  readonly deadLettersInTable: number
  readonly handlerFailures: number
  readonly handlerTimeouts: number
  readonly inboxExpired: number
  readonly databaseOutages: number
  readonly kafkaRestarts: number
}

export type StatName = keyof ConsumerStats

const METRICS: Readonly<Record<StatName, Metric.Counter<number>>> = {
  processed: consumerProcessed,
  duplicates: consumerDuplicates,
  deadLettered: consumerDeadLetters,
  deadLettersTrimmed: consumerDeadLettersTrimmed,
  deadLettersInTable: consumerDeadLettersInTable,
  handlerFailures: consumerHandlerFailures,
  handlerTimeouts: consumerHandlerTimeouts,
  inboxExpired: consumerInboxExpired,
  databaseOutages: consumerDatabaseOutages,
  kafkaRestarts: consumerKafkaRestarts,
}

export const emptyStats: ConsumerStats = {
  processed: 0,
  duplicates: 0,
  deadLettered: 0,
  deadLettersTrimmed: 0,
  deadLettersInTable: 0,
  handlerFailures: 0,
  handlerTimeouts: 0,
  inboxExpired: 0,
  databaseOutages: 0,
  kafkaRestarts: 0,
}

/** Counts into the instance's snapshot and the group's metric at once. */
export const makeStatsRecorder = (consumerGroup: string) =>
  Effect.gen(function* () {
    const ref = yield* Ref.make(emptyStats)
    const metrics = Object.fromEntries(
      Object.entries(METRICS).map(([name, metric]) => [name, Metric.withAttributes(metric, { consumer_group: consumerGroup })]),
    ) as Record<StatName, Metric.Counter<number>>
    const record = (name: StatName, n = 1) =>
      n === 0 ? Effect.void : Ref.update(ref, (s) => ({ ...s, [name]: s[name] + n })).pipe(Effect.andThen(Metric.update(metrics[name], n)))
    return { record, snapshot: Ref.get(ref) }
  })

export type StatsRecorder = Effect.Success<ReturnType<typeof makeStatsRecorder>>
