/**
 * Publishes one claimed batch: runs its plan (publish-plan.ts) and folds each send's result
 * into the batch's progress (publish-progress.ts), asking the retry policy about every event
 * Kafka did not take. Nothing here writes to the database: the outcome says, per event, sent
 * (with its offset), failed (retry after a delay, or its dead letter waits for the DLQ), dead
 * (its letter is on the DLQ, or the DLQ refused even a trimmed one) or given back untried.
 *
 * Order: dead letters first, so a later event of a dead event's key goes out only once the
 * letter is on the DLQ; then the records, in one request. A failure routes by its kind: an
 * unreachable broker halts the batch; a missing topic fails only its records and the rest is
 * sent again; a refused record is found by sending the records one by one.
 */
import { Duration, Effect, Result, type Tracer } from "effect"
import { RelayConfig } from "../config/config.ts"
import { KafkaUnavailable } from "../domain/errors.ts"
import type { ClaimedEvent } from "../domain/outbox-event.ts"
import type { DeadLetter } from "../kafka/dead-letter-record.ts"
import { Publisher } from "../kafka/publisher.ts"
import { publishDurationSeconds } from "../telemetry/metrics.ts"
import { endEventSpans, type PublishResult, startEventSpans } from "../telemetry/publish-spans.ts"
import { deliverDeadLetters, type LetterResult } from "./dead-letter-delivery.ts"
import type { SendBudget } from "./lease-keeper.ts"
import { type Publishable, planBatch } from "./publish-plan.ts"
import * as P from "./publish-progress.ts"
import { decide, type PublishFailure } from "./retry-policy.ts"

export type { BatchOutcome, DeadEvent, FailedEvent, SentEvent } from "./publish-progress.ts"

/** Each letter's result: on the DLQ (dead), refused by it (dead, dlq_rejected), waiting for it (failed), or untried. */
const settleLetters = (p: P.Progress, results: ReadonlyArray<LetterResult>) =>
  Effect.gen(function* () {
    const config = yield* RelayConfig
    const dead: Array<P.DeadEvent> = []
    const waiting: Array<P.FailedEvent> = []
    const untried: Array<ClaimedEvent> = []
    for (const r of results) {
      const { letter } = r
      if (r._tag === "Delivered") dead.push({ ...letter, letter: r.shape })
      else if (r._tag === "Refused") {
        // The row keeps payload and headers; the operator is told and can replay it.
        const error = `${letter.reason}: ${letter.error}; the dead-letter topic refused it too: ${r.error}`
        dead.push({ ...letter, reason: "dlq_rejected", error, letter: "refused" })
      } else if (r._tag === "Untried") untried.push(letter.event)
      else {
        const message = `dead letter (${letter.reason}) not published: ${r.error.message}`
        const decision = yield* decide(letter.event.attempts, { _tag: "DeadLetterUnavailable", message }, config)
        const retryInMs = decision._tag === "RetryLater" ? decision.delayMs : config.backoffMaxMs
        waiting.push({
          event: letter.event,
          // The row keeps why it died (what its letter's dlq.error will say), not why the letter
          // waits: that is the row's state (FAILED with a dead reason), logged below, and gauged.
          error: letter.error,
          retryInMs,
          // The event died once (that cost its attempt); waiting for its letter costs none.
          countsAttempt: letter.event.waitingDeadLetter === null,
          waitingDeadLetter: { reason: letter.reason, error: letter.error },
        })
      }
    }
    const undelivered = results.filter((r) => r._tag === "Undelivered")
    if (undelivered.length > 0) {
      yield* Effect.logWarning("dead letters not published; their rows wait for the dead-letter topic").pipe(
        Effect.annotateLogs({ count: undelivered.length, dlq_topic: config.dlqTopic, error: undelivered[0]!.error.message }),
      )
    }
    const haltedBy = undelivered.find((r) => r.error.haltsPublishing)
    const next = P.givenBack(P.failed(P.dead(p, dead), waiting), untried)
    return haltedBy === undefined ? next : P.halted(next)
  })

const KAFKA_DOWN = new KafkaUnavailable({ reason: "unreachable", message: "Kafka was unreachable for this batch", cause: null })

/** Dead letters to the DLQ; once Kafka is known to be down they wait for it without a try. */
const sendLetters = (p: P.Progress, letters: ReadonlyArray<DeadLetter>, budget: SendBudget) =>
  Effect.gen(function* () {
    if (letters.length === 0) return p
    if (p.kafkaUnavailable)
      return yield* settleLetters(
        p,
        letters.map((letter) => ({ _tag: "Undelivered", letter, error: KAFKA_DOWN })),
      )
    return yield* settleLetters(p, yield* deliverDeadLetters(letters, budget))
  })

/** Events Kafka did not take: each retries after a delay, or dies and its letter goes to the DLQ. */
const settleFailures = (p: P.Progress, failures: ReadonlyArray<Publishable>, failure: PublishFailure, budget: SendBudget) =>
  Effect.gen(function* () {
    const config = yield* RelayConfig
    const decisions = yield* Effect.forEach(failures, (item) =>
      Effect.map(decide(item.event.attempts, failure, config), (decision) => ({ item, decision })),
    )
    const { progress, letters } = P.decided(p, decisions)
    return yield* sendLetters(progress, letters, budget)
  })

const sendRecords = (
  p: P.Progress,
  items: ReadonlyArray<Publishable>,
  eventSpans: ReadonlyArray<Tracer.Span>,
  budget: SendBudget,
): Effect.Effect<P.Progress, never, Publisher | RelayConfig> =>
  Effect.gen(function* () {
    const { ready, progress } = P.takeReady(p, items)
    if (ready.length === 0) return progress
    if (!(yield* budget.allowsSend))
      return P.givenBack(
        progress,
        ready.map((item) => item.event),
      )
    const publisher = yield* Publisher
    const result = yield* Effect.result(
      publisher.publish(ready.map((i) => i.record)).pipe(
        Effect.trackDuration(publishDurationSeconds, (d) => Duration.toSeconds(d)),
        // One Kafka request carries many events: its span links to each event's publish span.
        Effect.withSpan("send", {
          kind: "client",
          links: eventSpans.map((span) => ({ span, attributes: {} })),
          attributes: { "messaging.system": "kafka", "messaging.operation.type": "send", "messaging.batch.message_count": ready.length },
        }),
      ),
    )
    if (Result.isSuccess(result)) return P.sent(progress, ready, result.success)
    const error = result.failure
    switch (error._tag) {
      case "KafkaRejected": {
        if (ready.length === 1) return yield* settleFailures(progress, ready, error, budget)
        yield* Effect.logWarning("Kafka rejected a batch; publishing its records one by one to find the bad ones").pipe(
          Effect.annotateLogs({ error: error.message, batch: ready.length }),
        )
        return yield* Effect.reduce(
          ready,
          () => progress,
          (q, item) => sendRecords(q, [item], eventSpans, budget),
        )
      }
      case "KafkaUnknownTopic": {
        // Only the missing topics' events wait for a retry; the rest is sent again without them.
        const missing = new Set(error.topics)
        const failing = P.firstOfEachKey(
          progress,
          ready.filter((item) => missing.has(item.record.topic)),
        )
        yield* Effect.logWarning("topics missing on the broker; their events wait for a retry, the others go on").pipe(
          Effect.annotateLogs({ topics: error.topics.join(","), events: failing.paying.length }),
        )
        const settled = yield* settleFailures(failing.progress, failing.paying, error, budget)
        return yield* sendRecords(
          settled,
          ready.filter((item) => !missing.has(item.record.topic)),
          eventSpans,
          budget,
        )
      }
      case "KafkaUnavailable": {
        yield* Effect.logWarning("Kafka unavailable; the batch will be retried with backoff").pipe(
          Effect.annotateLogs({ error: error.message, batch: ready.length }),
        )
        const failing = P.firstOfEachKey(progress, ready)
        return yield* settleFailures(P.halted(failing.progress), failing.paying, error, budget)
      }
    }
  })

const routesOf = (p: P.Progress): ReadonlyArray<readonly [ClaimedEvent, PublishResult]> => [
  ...p.sent.map(({ event, delivery }) => [event, { _tag: "sent", delivery }] as const),
  ...p.failed.map(({ event, error }) => [event, { _tag: "failed", error }] as const),
  ...p.dead.map(({ event, error }) => [event, { _tag: "dead", error }] as const),
  ...p.givenBack.map((event) => [event, { _tag: "held" }] as const),
]

/**
 * `holdBack`: events whose key an earlier batch of this pipeline left unsent; they are given
 * back untried. `events` are in id order. `budget` is asked before every send.
 */
export const publishBatch = Effect.fn("Relay.publishBatch")(function* (
  events: ReadonlyArray<ClaimedEvent>,
  holdBack: (event: ClaimedEvent) => boolean,
  budget: SendBudget,
) {
  const config = yield* RelayConfig
  const plan = planBatch(events, holdBack, config)
  for (const event of plan.invalidTraceparents) {
    yield* Effect.logWarning("invalid traceparent dropped; the event is published without it").pipe(
      Effect.annotateLogs({ event_id: event.eventId, dedup_key: event.dedupKey, traceparent: event.traceparent }),
    )
  }
  const afterLetters = yield* sendLetters(P.givenBack(P.EMPTY_PROGRESS, plan.givenBack), plan.deadLetters, budget)
  const { ready, progress } = P.takeReady(afterLetters, plan.records)
  const traced = yield* startEventSpans(ready)
  const done = yield* sendRecords(progress, traced.items, [...traced.spans.values()], budget)
  yield* endEventSpans(traced.spans, routesOf(done))
  return {
    sent: done.sent.map((s) => ({ ...s, span: traced.spans.get(s.event.id) })),
    failed: done.failed,
    dead: done.dead,
    givenBack: done.givenBack,
    kafkaUnavailable: done.kafkaUnavailable,
  } satisfies P.BatchOutcome
})
