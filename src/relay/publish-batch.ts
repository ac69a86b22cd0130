/**
 * Publishes one claimed batch and decides each event's route. Nothing here writes to
 * the database: the outcome says, per event, sent (with its offset), failed (retry
 * later), dead (already on the dead-letter topic) or held (give the lease back untried).
 */
import { Duration, Effect, Result, type Tracer } from "effect"
import { RelayConfig } from "../config/config.ts"
import type { KafkaRejected, KafkaUnavailable } from "../domain/errors.ts"
import type { ClaimedEvent, Delivery } from "../domain/outbox-event.ts"
import { isUnknownTopic } from "../kafka/error-classification.ts"
import { Publisher } from "../kafka/publisher.ts"
import { buildRecord, isValidTraceparent, type OutboundRecord } from "../kafka/records.ts"
import { publishDurationSeconds } from "../telemetry/metrics.ts"
import { carryingSpan, endPublishSpan, type PublishResult, startPublishSpan, TracingEnabled } from "../telemetry/publish-spans.ts"
import { type DeadLetter, deadLetterRecord } from "./dead-letter.ts"

export interface BatchOutcome {
  /** `span`: the event's publish span, when tracing is on (its SENT line belongs to that trace). */
  readonly sent: ReadonlyArray<{ readonly event: ClaimedEvent; readonly delivery: Delivery; readonly span?: Tracer.Span | undefined }>
  readonly failed: ReadonlyArray<{ readonly event: ClaimedEvent; readonly error: string }>
  readonly dead: ReadonlyArray<DeadLetter>
  readonly held: ReadonlyArray<ClaimedEvent>
  /** Kafka could not be reached for this batch: the loop should wait for it before claiming more. */
  readonly kafkaUnavailable: boolean
}

interface Publishable {
  readonly event: ClaimedEvent
  readonly record: OutboundRecord
}

interface Attempted {
  readonly sent: Array<{ event: ClaimedEvent; delivery: Delivery }>
  readonly failed: Array<{ event: ClaimedEvent; error: string }>
  readonly dead: Array<DeadLetter>
  readonly held: Array<ClaimedEvent>
  kafkaUnavailable: boolean
}

const emptyAttempt = (): Attempted => ({ sent: [], failed: [], dead: [], held: [], kafkaUnavailable: false })

/** Sorts claimed events into records to publish and events no retry can fix. */
const route = Effect.fnUntraced(function* (events: ReadonlyArray<ClaimedEvent>) {
  const config = yield* RelayConfig
  const publishable: Array<Publishable> = []
  const dead: Array<DeadLetter> = []
  for (const event of events) {
    const built = buildRecord(event, config.topicMap)
    if (event.attempts >= config.maxAttempts) {
      // Its attempts ran out earlier but the dead-letter topic was unreachable then.
      dead.push({
        event,
        reason: "attempts_exhausted",
        error: `gave up after ${event.attempts} attempts`,
        original: Result.getOrUndefined(built),
      })
    } else if (Result.isFailure(built)) {
      dead.push({ event, reason: built.failure.reason, error: built.failure.message, original: undefined })
    } else {
      if (event.traceparent !== null && !isValidTraceparent(event.traceparent)) {
        yield* Effect.logWarning("invalid traceparent dropped; the event is published without it").pipe(
          Effect.annotateLogs({ event_id: event.eventId, dedup_key: event.dedupKey, traceparent: event.traceparent }),
        )
      }
      publishable.push({ event, record: built.success })
    }
  }
  return { publishable, dead }
})

/** A retryable failure, unless this was the event's last attempt. */
const failOrExhaust = (into: Attempted, item: Publishable, error: string, maxAttempts: number) => {
  if (item.event.attempts + 1 >= maxAttempts) {
    into.dead.push({ event: item.event, reason: "attempts_exhausted", error, original: item.record })
  } else {
    into.failed.push({ event: item.event, error })
  }
}

/**
 * One record at a time, in id order, to find which records Kafka rejects. At the first
 * retryable failure the rest of the batch is given back untried: Kafka is in trouble,
 * and keeping the remaining records of each key behind the failed one keeps key order.
 */
const isolateRejected = Effect.fnUntraced(function* (items: ReadonlyArray<Publishable>) {
  const publisher = yield* Publisher
  const { maxAttempts } = yield* RelayConfig
  const out = emptyAttempt()
  for (const item of items) {
    if (out.kafkaUnavailable) {
      out.held.push(item.event)
      continue
    }
    const result = yield* Effect.result(publisher.publish([item.record]))
    if (Result.isSuccess(result)) {
      out.sent.push({ event: item.event, delivery: result.success[0]! })
    } else if (result.failure._tag === "KafkaRejected") {
      out.dead.push({ event: item.event, reason: result.failure.reason, error: result.failure.message, original: item.record })
    } else {
      out.kafkaUnavailable = true
      failOrExhaust(out, item, result.failure.message, maxAttempts)
    }
  }
  return out
})

const publishRecords = Effect.fnUntraced(function* (items: ReadonlyArray<Publishable>, eventSpans: ReadonlyArray<Tracer.Span>) {
  const publisher = yield* Publisher
  const { maxAttempts } = yield* RelayConfig
  if (items.length === 0) return emptyAttempt()
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
    return { ...emptyAttempt(), sent: items.map((item, i) => ({ event: item.event, delivery: result.success[i]! })) }
  }
  const error: KafkaUnavailable | KafkaRejected = result.failure
  if (error._tag === "KafkaRejected") {
    if (items.length === 1) {
      return {
        ...emptyAttempt(),
        dead: [{ event: items[0]!.event, reason: error.reason, error: error.message, original: items[0]!.record }],
      }
    }
    yield* Effect.logWarning("Kafka rejected a batch; publishing its records one by one to find the bad ones").pipe(
      Effect.annotateLogs({ error: error.message, batch: items.length }),
    )
    return yield* isolateRejected(items)
  }
  if (isUnknownTopic(error.cause)) {
    const missing = yield* publisher.missingTopics(items.map((i) => i.record.topic)).pipe(Effect.orElseSucceed(() => new Set<string>()))
    if (missing.size > 0) return yield* setAsideMissingTopics(items, eventSpans, missing)
  }
  yield* Effect.logWarning("Kafka unavailable; the batch will be retried with backoff").pipe(
    Effect.annotateLogs({ error: error.message, batch: items.length }),
  )
  const out = emptyAttempt()
  out.kafkaUnavailable = true
  for (const item of items) failOrExhaust(out, item, error.message, maxAttempts)
  return out
})

/**
 * Records for topics the broker does not have wait for their retry (attempts count, so an
 * unmapped topic ends as a dead letter if nobody creates it), and the rest of the batch
 * is sent again without them: one missing topic must not hold up every other event.
 */
const setAsideMissingTopics = (
  items: ReadonlyArray<Publishable>,
  eventSpans: ReadonlyArray<Tracer.Span>,
  missing: ReadonlySet<string>,
): Effect.Effect<Attempted, never, RelayConfig | Publisher> =>
  Effect.gen(function* () {
    const { maxAttempts } = yield* RelayConfig
    const waiting = emptyAttempt()
    for (const item of items) {
      if (missing.has(item.record.topic))
        failOrExhaust(waiting, item, `topic ${item.record.topic} does not exist on the broker`, maxAttempts)
    }
    yield* Effect.logWarning("topics missing on the broker; their events wait for a retry, the others go on").pipe(
      Effect.annotateLogs({ topics: [...missing].join(","), events: waiting.failed.length + waiting.dead.length }),
    )
    const rest: Attempted = yield* publishRecords(
      items.filter((i) => !missing.has(i.record.topic)),
      eventSpans,
    )
    return { ...rest, failed: [...waiting.failed, ...rest.failed], dead: [...waiting.dead, ...rest.dead] }
  })

/**
 * Dead letters go to the DLQ topic before their rows may become DEAD. If the DLQ
 * cannot be reached, the rows stay FAILED and are tried again: a dead letter is never dropped.
 */
const publishDeadLetters = Effect.fnUntraced(function* (letters: ReadonlyArray<DeadLetter>) {
  const publisher = yield* Publisher
  const { dlqTopic } = yield* RelayConfig
  const done: Array<DeadLetter> = []
  const failed: Array<{ event: ClaimedEvent; error: string }> = []
  if (letters.length === 0) return { done, failed }
  const now = new Date()
  const sendOne = (letter: DeadLetter) =>
    publisher
      .publish([deadLetterRecord(letter, dlqTopic, now)])
      .pipe(Effect.catchTag("KafkaRejected", () => publisher.publish([deadLetterRecord(letter, dlqTopic, now, { omitValue: true })])))
  const batch = yield* Effect.result(publisher.publish(letters.map((l) => deadLetterRecord(l, dlqTopic, now))))
  if (Result.isSuccess(batch)) return { done: [...letters], failed }
  for (const letter of letters) {
    const one = yield* Effect.result(sendOne(letter))
    if (Result.isSuccess(one)) done.push(letter)
    else
      failed.push({ event: letter.event, error: `dead letter (${letter.reason}: ${letter.error}) not published: ${one.failure.message}` })
  }
  return { done, failed }
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

const endSpans = (spans: ReadonlyMap<string, Tracer.Span>, attempted: Attempted) => {
  const results: Array<[ClaimedEvent, PublishResult]> = [
    ...attempted.sent.map(({ event, delivery }): [ClaimedEvent, PublishResult] => [event, { _tag: "sent", delivery }]),
    ...attempted.failed.map(({ event, error }): [ClaimedEvent, PublishResult] => [event, { _tag: "failed", error }]),
    ...attempted.dead.map(({ event, error }): [ClaimedEvent, PublishResult] => [event, { _tag: "dead", error }]),
    ...attempted.held.map((event): [ClaimedEvent, PublishResult] => [event, { _tag: "held" }]),
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

export const publishBatch = Effect.fn("Relay.publishBatch")(function* (events: ReadonlyArray<ClaimedEvent>) {
  const { publishable, dead } = yield* route(events)
  const traced = yield* startSpans(publishable)
  const attempted = yield* publishRecords(traced.items, [...traced.spans.values()])
  yield* endSpans(traced.spans, attempted)
  const letters = yield* publishDeadLetters([...dead, ...attempted.dead])
  return {
    sent: attempted.sent.map((s) => ({ ...s, span: traced.spans.get(s.event.id) })),
    failed: [...attempted.failed, ...letters.failed],
    dead: letters.done,
    held: attempted.held,
    kafkaUnavailable: attempted.kafkaUnavailable || letters.failed.length > 0,
  } satisfies BatchOutcome
})
