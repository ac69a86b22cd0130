/** Writes a batch's outcome back to the outbox, and says what it means in logs and metrics. */
import { Duration, Effect, LogLevel, Metric, References, Schedule } from "effect"
import { RelayConfig } from "../config/config.ts"
import { DeadLetterSignal } from "../ops/dead-letter-signal.ts"
import { OutboxStore } from "../outbox/outbox-store.ts"
import { endToEndSeconds, leasesLost, publishDead, publishFailed, publishSent } from "../telemetry/metrics.ts"
import { rowTraceContext } from "../telemetry/publish-spans.ts"
import { backoffSchedule, retryDelayMs } from "./backoff.ts"
import type { BatchOutcome } from "./publish-batch.ts"

export interface BatchSummary {
  readonly sent: number
  readonly failed: number
  readonly dead: number
  readonly held: number
  readonly lost: number
}

// A mark that fails after Kafka acknowledged leaves rows leased; they come back after the
// lease and are published again (a duplicate). Retrying for most of the lease rides out a
// database restart without one; past that, another instance may already have them.
const markRetry = (leaseMs: number) =>
  backoffSchedule({ baseMs: 100, maxMs: 2_000 }).pipe(Schedule.upTo({ duration: Duration.millis(leaseMs * 0.8) }))

const SENT_LEVELS = { trace: "Trace", debug: "Debug", info: "Info", warn: "Warn" } as const

export const markOutcome = Effect.fn("Relay.markOutcome")(function* (outcome: BatchOutcome) {
  const store = yield* OutboxStore
  const config = yield* RelayConfig
  const signal = yield* DeadLetterSignal
  const policy = { baseMs: config.backoffBaseMs, maxMs: config.backoffMaxMs }

  const failedMarks = yield* Effect.forEach(outcome.failed, ({ event, error }) =>
    Effect.map(retryDelayMs(policy, event.attempts + 1), (retryInMs) => ({ id: event.id, error, retryInMs })),
  )
  const [sent, failed, dead] = yield* Effect.all(
    [
      store.markSent(outcome.sent.map(({ event, delivery }) => ({ id: event.id, ...delivery }))),
      store.markFailed(failedMarks),
      store.markDead(outcome.dead.map(({ event, reason, error }) => ({ id: event.id, reason, error }))),
      store.release(outcome.held.map((e) => e.id)),
    ],
    { concurrency: "unbounded" },
  ).pipe(
    Effect.tapError((e) => Effect.logWarning("marking failed; retrying within the lease").pipe(Effect.annotateLogs({ error: e.message }))),
    Effect.retry({ schedule: markRetry(config.leaseMs), while: (e) => e._tag === "DatabaseError" }),
  )

  const now = Date.now()
  const markedSent = new Set(sent.marked)
  const sentLevel = SENT_LEVELS[config.sentLogLevel]
  const logSent = Effect.logWithLevel(sentLevel)
  // Built per event, a filtered-out SENT line still costs: skip the loop's logging when it is off.
  const logEachSent = LogLevel.isGreaterThanOrEqualTo(sentLevel, yield* References.MinimumLogLevel)
  for (const { event, delivery, span } of outcome.sent) {
    if (!markedSent.has(event.id)) continue
    yield* Metric.update(endToEndSeconds, (now - event.createdAtMs) / 1000)
    if (!logEachSent) continue
    // The line carries the event's own trace (its publish span, else the row's traceparent), not the batch's.
    const trace = span ?? rowTraceContext(event)
    yield* logSent("SENT").pipe(
      trace === undefined ? (log) => log : Effect.withParentSpan(trace),
      Effect.annotateLogs({
        event_id: event.eventId,
        event_type: event.eventType,
        dedup_key: event.dedupKey,
        topic: delivery.topic,
        partition: delivery.partition,
        offset: delivery.offset,
        request_id: event.requestId ?? undefined,
      }),
    )
  }
  const markedDead = new Set(dead.marked)
  yield* signal.raise(outcome.dead.filter((letter) => markedDead.has(letter.event.id)))
  const lost = [...sent.lost, ...failed.lost, ...dead.lost]
  if (lost.length > 0) {
    // Another instance took these over after our lease expired: it will publish them again.
    yield* Effect.logWarning("lease lost before marking; another instance took these rows over").pipe(
      Effect.annotateLogs({ ids: lost.join(","), count: lost.length }),
    )
  }
  yield* Metric.update(publishSent, sent.marked.length)
  yield* Metric.update(publishFailed, failed.marked.length)
  yield* Metric.update(publishDead, dead.marked.length)
  yield* Metric.update(leasesLost, lost.length)
  return {
    sent: sent.marked.length,
    failed: failed.marked.length,
    dead: dead.marked.length,
    held: outcome.held.length,
    lost: lost.length,
  } satisfies BatchSummary
})
