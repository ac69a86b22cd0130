/** Writes a batch's outcome back to the outbox, and says what it means in logs and metrics. */
import { Clock, Effect, LogLevel, Metric, References } from "effect"
import { RelayConfig } from "../config/config.ts"
import { DeadLetterSignal } from "../ops/dead-letter-signal.ts"
import { InstanceId } from "../outbox/instance-id.ts"
import { type Lease, OutboxStore } from "../outbox/outbox-store.ts"
import { endToEndSeconds, leasesLost, publishDead, publishFailed, publishSent } from "../telemetry/metrics.ts"
import { rowTraceContext } from "../telemetry/publish-spans.ts"
import { markIsolating, withinLease } from "./mark-isolation.ts"
import type { BatchOutcome } from "./publish-batch.ts"

export interface BatchSummary {
  readonly sent: number
  readonly failed: number
  readonly dead: number
  readonly givenBack: number
  readonly lost: number
  /** Rows whose mark PostgreSQL refused: settled DEAD `unmarkable`. */
  readonly unmarkable: number
}

const SENT_LEVELS = { trace: "Trace", debug: "Debug", info: "Info", warn: "Warn" } as const

/**
 * `leases`: the lease each row is held under now (a batch that published for long renewed
 * them). Each statement rides out an outage or a lost race within the lease; a data error
 * is isolated to the rows that cause it, and only those are settled `unmarkable`.
 */
export const markOutcome = Effect.fn("Relay.markOutcome")(function* (outcome: BatchOutcome, leases: ReadonlyMap<string, string>) {
  const store = yield* OutboxStore
  const config = yield* RelayConfig
  const signal = yield* DeadLetterSignal
  const leaseOf = (event: { readonly id: string; readonly lease: string }): Lease => ({
    id: event.id,
    lease: leases.get(event.id) ?? event.lease,
  })
  const [sent, failed, dead] = yield* Effect.all(
    [
      markIsolating(
        store.markSent,
        outcome.sent.map(({ event, delivery }) => ({ ...leaseOf(event), ...delivery })),
      ),
      markIsolating(
        store.markFailed,
        outcome.failed.map(({ event, error, retryInMs, countsAttempt, waitingDeadLetter }) => ({
          ...leaseOf(event),
          error,
          retryInMs,
          countsAttempt,
          deadReason: waitingDeadLetter?.reason ?? null,
        })),
      ),
      markIsolating(
        store.markDead,
        outcome.dead.map(({ event, reason, error }) => ({
          ...leaseOf(event),
          reason,
          error,
          countsAttempt: event.waitingDeadLetter === null,
        })),
      ),
      // A release that fails leaves the rows to their lease: nothing to isolate, nothing lost.
      withinLease(store.release(outcome.givenBack.map(leaseOf))),
    ],
    { concurrency: "unbounded" },
  )

  const now = yield* Clock.currentTimeMillis
  const markedSent = new Set(sent.marked)
  const sentLevel = SENT_LEVELS[config.sentLogLevel]
  const logSent = Effect.logWithLevel(sentLevel)
  // Built per event, a filtered-out SENT line still costs: skip the loop's logging when it is off.
  const logEachSent = LogLevel.isGreaterThanOrEqualTo(sentLevel, yield* References.MinimumLogLevel)
  // The histogram is fed synchronously with this fiber's context (what Metric.update does),
  // not through one Effect per event.
  const context = yield* Effect.context<never>()
  for (const { event, delivery, span } of outcome.sent) {
    if (!markedSent.has(event.id)) continue
    endToEndSeconds.updateUnsafe((now - event.createdAtMs) / 1000, context)
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
  if (lost.length > 0) yield* reportLostLeases(lost)
  const unmarkable = sent.unmarkable + failed.unmarkable + dead.unmarkable
  yield* Metric.update(publishSent, sent.marked.length)
  yield* Metric.update(publishFailed, failed.marked.length)
  yield* Metric.update(publishDead, dead.marked.length)
  yield* Metric.update(leasesLost, lost.length)
  return {
    sent: sent.marked.length,
    failed: failed.marked.length,
    dead: dead.marked.length,
    givenBack: outcome.givenBack.length,
    lost: lost.length,
    unmarkable,
  } satisfies BatchSummary
})

/**
 * Rows this instance published but no longer held under that claim when marking. Another
 * instance took them over after the lease expired, or this instance did (a later batch
 * claimed them again: sends slower than the lease), and publishes them again; or nobody holds
 * them: the database lost the claim (a crash with synchronous_commit off) and they are due again.
 */
const reportLostLeases = Effect.fnUntraced(function* (ids: ReadonlyArray<string>) {
  const store = yield* OutboxStore
  const me = yield* InstanceId
  const holders = yield* store.leaseHolders(ids).pipe(Effect.orElseSucceed(() => new Map<string, string | null>()))
  const holder = (id: string) => holders.get(id) ?? null
  const byOther = ids.filter((id) => holder(id) !== null && holder(id) !== me)
  const byLaterClaim = ids.filter((id) => holder(id) === me)
  const unheld = ids.filter((id) => holder(id) === null)
  if (byOther.length > 0) {
    yield* Effect.logWarning("lease lost before marking: another instance took these rows over and will publish them again").pipe(
      Effect.annotateLogs({
        ids: byOther.join(","),
        count: byOther.length,
        holders: [...new Set(byOther.map(holder))].join(","),
      }),
    )
  }
  if (byLaterClaim.length > 0) {
    yield* Effect.logWarning(
      "lease expired before marking: a later claim of this instance took these rows again and will publish them again (sends slower than LEASE_MS)",
    ).pipe(Effect.annotateLogs({ ids: byLaterClaim.join(","), count: byLaterClaim.length }))
  }
  if (unheld.length > 0) {
    yield* Effect.logWarning(
      "lease lost before marking: nobody holds these rows any more (the database lost the claim, e.g. in a crash); they are due again and will be published again",
    ).pipe(Effect.annotateLogs({ ids: unheld.join(","), count: unheld.length }))
  }
})
