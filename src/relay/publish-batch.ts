/**
 * Publishes one claimed batch and decides each event's route. Nothing here writes to the
 * database: the outcome says, per event, sent (with its offset), failed (retry after a
 * delay), dead (its dead letter is on the DLQ, or the DLQ refused even a trimmed one) or
 * given back (the lease is returned untried).
 *
 * One hold-back rule, whatever the route: once an event of a key is left unsent (failed,
 * given back, waiting for a missing topic, its dead letter not published), the later events
 * of that key in this batch are given back untried, and the relay loop holds the key in the
 * batches claimed behind this one. A dead event's letter goes to the DLQ before any later
 * event of its key is sent.
 */
import { Clock, Duration, Effect, Result, type Tracer } from "effect"
import { RelayConfig } from "../config/config.ts"
import { KafkaUnavailable } from "../domain/errors.ts"
import { topicFor } from "../domain/event-types.ts"
import type { ClaimedEvent, Delivery } from "../domain/outbox-event.ts"
import { type DeadLetter, deadLetterRecord } from "../kafka/dead-letter-record.ts"
import { Publisher } from "../kafka/publisher.ts"
import { buildRecord, isValidTraceparent, type OutboundRecord } from "../kafka/records.ts"
import { publishDurationSeconds } from "../telemetry/metrics.ts"
import { carryingSpan, endPublishSpan, type PublishResult, startPublishSpan, TracingEnabled } from "../telemetry/publish-spans.ts"
import { decide, exhaustedBefore, type PublishFailure } from "./retry-policy.ts"

export interface SentEvent {
  readonly event: ClaimedEvent
  readonly delivery: Delivery
  /** The event's publish span, when tracing is on (its SENT line belongs to that trace). */
  readonly span?: Tracer.Span | undefined
}
export interface FailedEvent {
  readonly event: ClaimedEvent
  readonly error: string
  readonly retryInMs: number
}
/** `trimmed`: the DLQ took the letter only without its value and the row's headers; `refused`: not even then. */
export interface DeadEvent extends DeadLetter {
  readonly letter: "full" | "trimmed" | "refused"
}

export interface BatchOutcome {
  readonly sent: ReadonlyArray<SentEvent>
  readonly failed: ReadonlyArray<FailedEvent>
  readonly dead: ReadonlyArray<DeadEvent>
  readonly givenBack: ReadonlyArray<ClaimedEvent>
  /** Kafka could not be reached for this batch: the loop should wait for it before claiming more. */
  readonly kafkaUnavailable: boolean
}

interface Publishable {
  readonly event: ClaimedEvent
  readonly record: OutboundRecord
}

/** The outcome as it is built; local to one publishBatch call. */
interface Ledger {
  readonly sent: Array<SentEvent>
  readonly failed: Array<FailedEvent>
  readonly dead: Array<DeadEvent>
  readonly givenBack: Array<ClaimedEvent>
  /** Keys with an event left unsent in this batch. */
  readonly unsentKeys: Set<string>
  kafkaUnavailable: boolean
}

const isBlocked = (ledger: Ledger, event: ClaimedEvent) => event.aggregateKey !== null && ledger.unsentKeys.has(event.aggregateKey)
const leaveUnsent = (ledger: Ledger, event: ClaimedEvent) => {
  if (event.aggregateKey !== null) ledger.unsentKeys.add(event.aggregateKey)
}
const giveBack = (ledger: Ledger, event: ClaimedEvent) => {
  ledger.givenBack.push(event)
  leaveUnsent(ledger, event)
}

/**
 * Sends dead letters in one request; if the DLQ refuses it, one by one, each trimmed when its
 * full form is refused, and marked `dlq_rejected` when even that is. An unreachable DLQ leaves
 * the events FAILED: a dead letter is never dropped.
 */
const sendDeadLetters = Effect.fnUntraced(function* (ledger: Ledger, letters: ReadonlyArray<DeadLetter>) {
  if (letters.length === 0) return
  const publisher = yield* Publisher
  const config = yield* RelayConfig
  const now = yield* Clock.currentTimeMillis
  const unreachable = (letter: DeadLetter, error: KafkaUnavailable) =>
    Effect.gen(function* () {
      if (error.reason !== "unknown_topic") ledger.kafkaUnavailable = true
      const message = `dead letter (${letter.reason}: ${letter.error}) not published: ${error.message}`
      const decision = yield* decide(letter.event.attempts, { _tag: "DeadLetterUnavailable", message }, config)
      if (decision._tag === "RetryLater") ledger.failed.push({ event: letter.event, error: message, retryInMs: decision.delayMs })
      leaveUnsent(ledger, letter.event)
    })

  const all = yield* Effect.result(publisher.publish(letters.map((l) => deadLetterRecord(l, config.dlqTopic, now, "full"))))
  if (Result.isSuccess(all)) {
    for (const letter of letters) ledger.dead.push({ ...letter, letter: "full" })
    return
  }
  if (all.failure._tag === "KafkaUnavailable") {
    for (const letter of letters) yield* unreachable(letter, all.failure)
    return
  }
  for (const letter of letters) {
    if (letters.length > 1) {
      const full = yield* Effect.result(publisher.publish([deadLetterRecord(letter, config.dlqTopic, now, "full")]))
      if (Result.isSuccess(full)) {
        ledger.dead.push({ ...letter, letter: "full" })
        continue
      }
      if (full.failure._tag === "KafkaUnavailable") {
        yield* unreachable(letter, full.failure)
        continue
      }
    }
    const trimmed = yield* Effect.result(publisher.publish([deadLetterRecord(letter, config.dlqTopic, now, "trimmed")]))
    if (Result.isSuccess(trimmed)) ledger.dead.push({ ...letter, letter: "trimmed" })
    else if (trimmed.failure._tag === "KafkaUnavailable") yield* unreachable(letter, trimmed.failure)
    else {
      // The row keeps payload and headers; the operator is told and can replay it.
      ledger.dead.push({
        ...letter,
        reason: "dlq_rejected",
        error: `${letter.reason}: ${letter.error}; the dead-letter topic refused it too: ${trimmed.failure.message}`,
        letter: "refused",
      })
    }
  }
})

/** Events Kafka did not take: each retries after a delay, or dies and goes to the DLQ, per the retry policy. */
const settleFailures = Effect.fnUntraced(function* (
  ledger: Ledger,
  failures: ReadonlyArray<{ readonly item: Publishable; readonly failure: PublishFailure }>,
) {
  const config = yield* RelayConfig
  const letters: Array<DeadLetter> = []
  for (const { item, failure } of failures) {
    const decision = yield* decide(item.event.attempts, failure, config)
    if (decision._tag === "RetryLater") {
      ledger.failed.push({ event: item.event, error: decision.error, retryInMs: decision.delayMs })
      leaveUnsent(ledger, item.event)
    } else {
      letters.push({
        event: item.event,
        reason: decision.reason,
        error: decision.error,
        original: item.record,
        originalTopic: item.record.topic,
      })
    }
  }
  yield* sendDeadLetters(ledger, letters)
})

/**
 * One record at a time, in id order, to find which records Kafka rejects; a rejected one is
 * dead-lettered before the next is sent. At the first unavailability the rest is given back
 * untried: Kafka is in trouble.
 */
const isolateRejected = Effect.fnUntraced(function* (ledger: Ledger, items: ReadonlyArray<Publishable>) {
  const publisher = yield* Publisher
  for (const item of items) {
    if (ledger.kafkaUnavailable || isBlocked(ledger, item.event)) {
      giveBack(ledger, item.event)
      continue
    }
    const result = yield* Effect.result(publisher.publish([item.record]))
    if (Result.isSuccess(result)) ledger.sent.push({ event: item.event, delivery: result.success[0]! })
    else {
      if (result.failure._tag === "KafkaUnavailable" && result.failure.reason !== "unknown_topic") ledger.kafkaUnavailable = true
      yield* settleFailures(ledger, [{ item, failure: result.failure }])
    }
  }
})

/** Every item fails alike; only the first unsent event of each key pays an attempt, the rest are given back. */
const failInOrder = (ledger: Ledger, items: ReadonlyArray<Publishable>, failureOf: (item: Publishable) => PublishFailure | undefined) => {
  const failures: Array<{ item: Publishable; failure: PublishFailure }> = []
  const rest: Array<Publishable> = []
  for (const item of items) {
    if (isBlocked(ledger, item.event)) giveBack(ledger, item.event)
    else {
      const failure = failureOf(item)
      if (failure === undefined) rest.push(item)
      else {
        failures.push({ item, failure })
        leaveUnsent(ledger, item.event)
      }
    }
  }
  return { failures, rest }
}

const publishRecords = (
  ledger: Ledger,
  items: ReadonlyArray<Publishable>,
  eventSpans: ReadonlyArray<Tracer.Span>,
): Effect.Effect<void, never, Publisher | RelayConfig> =>
  Effect.gen(function* () {
    if (items.length === 0) return
    const publisher = yield* Publisher
    const result = yield* Effect.result(
      publisher.publish(items.map((i) => i.record)).pipe(
        Effect.trackDuration(publishDurationSeconds, (d) => Duration.toSeconds(d)),
        // One Kafka request carries many events: its span links to each event's publish span.
        Effect.withSpan("send", {
          kind: "client",
          links: eventSpans.map((span) => ({ span, attributes: {} })),
          attributes: { "messaging.system": "kafka", "messaging.operation.type": "send", "messaging.batch.message_count": items.length },
        }),
      ),
    )
    if (Result.isSuccess(result)) {
      items.forEach((item, i) => {
        ledger.sent.push({ event: item.event, delivery: result.success[i]! })
      })
      return
    }
    const error = result.failure
    if (error._tag === "KafkaRejected") {
      if (items.length === 1) return yield* settleFailures(ledger, [{ item: items[0]!, failure: error }])
      yield* Effect.logWarning("Kafka rejected a batch; publishing its records one by one to find the bad ones").pipe(
        Effect.annotateLogs({ error: error.message, batch: items.length }),
      )
      return yield* isolateRejected(ledger, items)
    }
    if (error.reason === "unknown_topic") {
      const missing = yield* publisher.missingTopics(items.map((i) => i.record.topic)).pipe(Effect.orElseSucceed(() => new Set<string>()))
      if (missing.size > 0) {
        // Only the missing topics' events wait for a retry (attempts count, so an unmapped topic
        // ends as a dead letter if nobody creates it); the rest is sent again without them.
        const { failures, rest } = failInOrder(ledger, items, (item) =>
          missing.has(item.record.topic)
            ? new KafkaUnavailable({
                reason: "unknown_topic",
                message: `topic ${item.record.topic} does not exist on the broker`,
                cause: null,
              })
            : undefined,
        )
        yield* Effect.logWarning("topics missing on the broker; their events wait for a retry, the others go on").pipe(
          Effect.annotateLogs({ topics: [...missing].join(","), events: failures.length }),
        )
        yield* settleFailures(ledger, failures)
        return yield* publishRecords(ledger, rest, eventSpans)
      }
    }
    yield* Effect.logWarning("Kafka unavailable; the batch will be retried with backoff").pipe(
      Effect.annotateLogs({ error: error.message, batch: items.length }),
    )
    ledger.kafkaUnavailable = true
    yield* settleFailures(ledger, failInOrder(ledger, items, () => error).failures)
  })

/** With tracing on, each event gets its publish span, and its record the span's traceparent. */
const startSpans = Effect.fnUntraced(function* (items: ReadonlyArray<Publishable>) {
  const spans = new Map<string, Tracer.Span>()
  if (!(yield* TracingEnabled)) return { items, spans }
  const traced = yield* Effect.forEach(items, (item) =>
    Effect.map(startPublishSpan(item.event, item.record), (span) => {
      spans.set(item.event.id, span)
      return { event: item.event, record: carryingSpan(item.record, span) }
    }),
  )
  return { items: traced, spans }
})

const endSpans = (spans: ReadonlyMap<string, Tracer.Span>, ledger: Ledger) => {
  if (spans.size === 0) return Effect.void
  const results: Array<[ClaimedEvent, PublishResult]> = [
    ...ledger.sent.map(({ event, delivery }): [ClaimedEvent, PublishResult] => [event, { _tag: "sent", delivery }]),
    ...ledger.failed.map(({ event, error }): [ClaimedEvent, PublishResult] => [event, { _tag: "failed", error }]),
    ...ledger.dead.map(({ event, error }): [ClaimedEvent, PublishResult] => [event, { _tag: "dead", error }]),
    ...ledger.givenBack.map((event): [ClaimedEvent, PublishResult] => [event, { _tag: "held" }]),
  ]
  return Effect.forEach(
    results,
    ([event, result]) => {
      const span = spans.get(event.id)
      return span === undefined ? Effect.void : endPublishSpan(span, result)
    },
    { discard: true },
  )
}

/**
 * `holdBack`: events whose key an earlier batch of this pipeline left unsent; they are given
 * back untried. `events` are in id order.
 */
export const publishBatch = Effect.fn("Relay.publishBatch")(function* (
  events: ReadonlyArray<ClaimedEvent>,
  holdBack: (event: ClaimedEvent) => boolean,
) {
  const config = yield* RelayConfig
  const ledger: Ledger = { sent: [], failed: [], dead: [], givenBack: [], unsentKeys: new Set(), kafkaUnavailable: false }
  const publishable: Array<Publishable> = []
  const deadFirst: Array<DeadLetter> = []
  for (const event of events) {
    if (isBlocked(ledger, event) || holdBack(event)) {
      giveBack(ledger, event)
      continue
    }
    const built = buildRecord(event, config.topicMap, config.maxRecordBytes)
    const exhausted = exhaustedBefore(event.attempts, config)
    // Dead letters name the topic the event maps to; looked up only for them, off the hot path.
    if (exhausted !== undefined) {
      // Its attempts ran out earlier but the dead-letter topic was unreachable then.
      const original = Result.getOrUndefined(built)
      const originalTopic = topicFor(config.topicMap, event.eventType)
      deadFirst.push({ event, reason: exhausted.reason, error: exhausted.error, original, originalTopic })
    } else if (Result.isFailure(built)) {
      const originalTopic = topicFor(config.topicMap, event.eventType)
      deadFirst.push({ event, reason: built.failure.reason, error: built.failure.message, original: undefined, originalTopic })
    } else {
      if (event.traceparent !== null && !isValidTraceparent(event.traceparent)) {
        yield* Effect.logWarning("invalid traceparent dropped; the event is published without it").pipe(
          Effect.annotateLogs({ event_id: event.eventId, dedup_key: event.dedupKey, traceparent: event.traceparent }),
        )
      }
      publishable.push({ event, record: built.success })
    }
  }
  // Dead letters first: a later event of their key goes out only once they are on the DLQ.
  yield* sendDeadLetters(ledger, deadFirst)
  const traced = yield* startSpans(
    publishable.filter((item) => {
      if (!isBlocked(ledger, item.event)) return true
      giveBack(ledger, item.event)
      return false
    }),
  )
  yield* publishRecords(ledger, traced.items, [...traced.spans.values()])
  yield* endSpans(traced.spans, ledger)
  return {
    sent: ledger.sent.map((s) => ({ ...s, span: traced.spans.get(s.event.id) })),
    failed: ledger.failed,
    dead: ledger.dead,
    givenBack: ledger.givenBack,
    kafkaUnavailable: ledger.kafkaUnavailable,
  } satisfies BatchOutcome
})
