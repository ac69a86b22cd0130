/**
 * The relay, top to bottom: a trigger (poll tick, or an insert's NOTIFY) → claim a
 * batch (repeated at once while batches come back full) → publish → mark. The three
 * stages overlap: the next batch is claimed while one publishes and the one before is
 * marked. That is safe for per-key order because a claim never takes a row while an
 * older row of its key is still pending, and rows in flight are pending until marked.
 * Publishing and marking are each uninterruptible; on a stop the batches in flight go
 * through both, and leases that were not published are given back.
 */
import { Duration, Effect, Fiber, Metric, Option, Ref, Stream } from "effect"
import { RelayConfig } from "../config/config.ts"
import type { ClaimedEvent } from "../domain/outbox-event.ts"
import { Publisher } from "../kafka/publisher.ts"
import { insertWakeUps } from "../outbox/insert-notifications.ts"
import { OutboxStore } from "../outbox/outbox-store.ts"
import { requireCurrentSchema } from "../outbox/schema-migrator.ts"
import { batchSize as batchSizeMetric, leaseTakeovers } from "../telemetry/metrics.ts"
import { backoffSchedule } from "./backoff.ts"
import { FailedKeys } from "./failed-keys.ts"
import { markOutcome } from "./mark-outcome.ts"
import { type BatchOutcome, publishBatch } from "./publish-batch.ts"
import { RelayState } from "./relay-state.ts"

type Held = Ref.Ref<ReadonlySet<string>>

const claimBatch = Effect.fn("Relay.claimBatch")(function* (held: Held, after: string) {
  const store = yield* OutboxStore
  const config = yield* RelayConfig
  // Claiming and recording the lease as held happen together, so a stop in between cannot orphan it.
  const batch = yield* Effect.uninterruptible(
    store
      .claimDue(config.batchSize, after)
      .pipe(Effect.tap((events) => Ref.update(held, (ids) => new Set([...ids, ...events.map((e) => e.id)])))),
  )
  if (batch.length > 0) yield* Metric.update(batchSizeMetric, batch.length)
  const takenOver = batch.filter((e) => e.takenOverFrom !== null)
  if (takenOver.length > 0) {
    yield* Metric.update(leaseTakeovers, takenOver.length)
    yield* Effect.logWarning("took over rows whose lease expired; they may already be on Kafka (a duplicate)").pipe(
      Effect.annotateLogs({ count: takenOver.length, from: [...new Set(takenOver.map((e) => e.takenOverFrom))].join(",") }),
    )
  }
  return batch
})

/** Whether the loop may claim now: not paused, not stopping. */
const mayClaim = Effect.gen(function* () {
  const state = yield* RelayState
  return !(yield* Ref.get(state.paused)) && !(yield* Ref.get(state.stopping))
})

/**
 * What /healthz reads: the loop completed a cycle (read at run time, not when the effect
 * was built). While Kafka is down nothing completes: claims may still come back empty,
 * but the loop cannot do its work.
 */
const recordCycle = Effect.gen(function* () {
  const state = yield* RelayState
  if (yield* Ref.get(state.kafkaReachable)) yield* Ref.set(state.lastCycleAt, Date.now())
})

/** A trigger while paused is a cycle too: the loop is alive, it just claims nothing. */
const mayClaimOnTrigger = Effect.gen(function* () {
  const may = yield* mayClaim
  if (!may) yield* recordCycle
  return may
})

/**
 * Poll ticks merged with insert wake-ups. The sliding buffer of one coalesces
 * whatever arrives while a cycle runs into a single next trigger, so a burst of
 * inserts costs one extra claim, not one per insert. While rows keep arriving (a claim
 * found some less than POLL_INTERVAL_MS ago) the poll runs at BUSY_POLL_INTERVAL_MS:
 * under load, latency then does not hang on NOTIFY, which high-rate writers may turn off
 * because it serialises their commits, and an idle relay still costs one claim per interval.
 */
const triggers = (rowsSeenAt: Ref.Ref<number>) =>
  Effect.gen(function* () {
    const config = yield* RelayConfig
    const idleTicks = Stream.tick(Duration.millis(config.pollIntervalMs))
    const busyTicks = Stream.tick(Duration.millis(config.busyPollIntervalMs)).pipe(
      Stream.filterEffect(() => Ref.get(rowsSeenAt).pipe(Effect.map((at) => Date.now() - at < config.pollIntervalMs))),
    )
    const ticks = Stream.merge(idleTicks, busyTicks)
    return (config.listenNotify ? ticks.pipe(Stream.merge(insertWakeUps)) : ticks).pipe(Stream.buffer({ capacity: 1, strategy: "sliding" }))
  })

interface Claimed {
  readonly events: ReadonlyArray<ClaimedEvent>
  /** When the claim started (before its statement ran). */
  readonly claimedAt: number
  readonly sequence: number
}

let claimSequence = 0

/**
 * Where a drain's next claim starts. While batches come back full, each claim starts after
 * the last id of the one before: the rows below are this instance's batches in flight (or
 * rows it had to skip), and walking past up to three batches of leased rows on every claim
 * made the claim the costliest statement of a pipelined drain. A pass restarts from the
 * lowest id at each trigger and at least every POLL_INTERVAL_MS, so a skipped row (locked by
 * another instance, held back behind its key, a retry that came due, a lower id committed
 * late) waits no longer than an idle relay's poll would make it.
 */
interface Cursor {
  readonly after: string
  readonly passStartedAt: number
}

const startOfPass = (): Cursor => ({ after: "0", passStartedAt: Date.now() })

/** Batches for one trigger: claims again at once while they come back full, so a backlog drains without sleeping. */
const claimUntilDrained = (held: Held, failedKeys: FailedKeys, rowsSeenAt: Ref.Ref<number>) =>
  Stream.paginate(startOfPass(), (cursor) =>
    Effect.gen(function* () {
      const config = yield* RelayConfig
      // After a failure or hand-back, the batches in flight are marked before the next claim (see FailedKeys).
      while (!failedKeys.mayClaim) yield* Effect.sleep(Duration.millis(5))
      const claimedAt = Date.now()
      const from = claimedAt - cursor.passStartedAt > config.pollIntervalMs ? startOfPass() : cursor
      // Untraced: an idle relay claims every poll, and a span each time would bury the publish traces.
      const events = yield* claimBatch(held, from.after).pipe(Effect.withTracerEnabled(false))
      if (events.length > 0) {
        failedKeys.claimed()
        yield* Ref.set(rowsSeenAt, claimedAt)
      }
      const more = events.length >= config.batchSize && (yield* mayClaim)
      return [
        events.length > 0 ? [{ events, claimedAt, sequence: ++claimSequence }] : [],
        more ? Option.some({ after: events.at(-1)!.id, passStartedAt: from.passStartedAt }) : Option.none(),
      ] as const
    }),
  )

/**
 * After a batch found Kafka unreachable, claim nothing until a broker answers again: the
 * rows just failed wait for their retry time, and no other row burns an attempt on an outage.
 */
const waitForKafka = Effect.gen(function* () {
  const state = yield* RelayState
  const publisher = yield* Publisher
  yield* Effect.logWarning("Kafka unreachable; publishing and claiming paused until a broker answers")
  yield* publisher.checkReachable.pipe(Effect.retry(backoffSchedule({ baseMs: 250, maxMs: 10_000 })))
  yield* Ref.set(state.kafkaReachable, true)
  yield* Effect.logInfo("Kafka reachable again; relaying resumes")
})

/**
 * A batch that waited too long for its turn (Kafka was down, say) may no longer be ours
 * by the time it is sent: it is given back untried instead.
 */
const leaseTooOld = (claimed: Claimed) => RelayConfig.useSync((c) => Date.now() - claimed.claimedAt > c.leaseMs - 2 * c.publishTimeoutMs)

/**
 * After a batch found Kafka down, its outcome goes on to be marked (FAILED, with backoff)
 * at once, and the next batch waits here until a broker answers; the full buffers then
 * hold the claim stage back, so nothing else is claimed during the outage.
 */
const publishClaimed = (failedKeys: FailedKeys) => (claimed: Claimed) =>
  Effect.gen(function* () {
    const state = yield* RelayState
    if (!(yield* Ref.get(state.kafkaReachable))) yield* waitForKafka
    if (yield* leaseTooOld(claimed)) {
      return { claimed, outcome: { sent: [], failed: [], dead: [], held: claimed.events, kafkaUnavailable: false } }
    }
    // Events claimed behind an earlier failure of their key are given back: they wait
    // behind the failed row, as any later claim would.
    const waits = (e: ClaimedEvent) => failedKeys.mustWait(e.aggregateKey, claimed.claimedAt)
    const published = yield* publishBatch(claimed.events.filter((e) => !waits(e))).pipe(Effect.uninterruptible)
    const outcome: BatchOutcome = { ...published, held: [...published.held, ...claimed.events.filter(waits)] }
    failedKeys.failed(claimed.sequence, notSentKeys(outcome))
    if (outcome.kafkaUnavailable) yield* Ref.set(state.kafkaReachable, false)
    return { claimed, outcome }
  })

const notSentKeys = (outcome: BatchOutcome) => [
  ...outcome.failed.map((f) => f.event.aggregateKey),
  ...outcome.held.map((e) => e.aggregateKey),
]

const markPublished =
  (held: Held, failedKeys: FailedKeys) =>
  ({ claimed, outcome }: { readonly claimed: Claimed; readonly outcome: BatchOutcome }) =>
    Effect.gen(function* () {
      const config = yield* RelayConfig
      const summary = yield* markOutcome(outcome).pipe(
        Effect.tap(() =>
          Effect.sync(() => {
            failedKeys.marked(claimed.sequence, notSentKeys(outcome), Date.now())
            failedKeys.forgetBefore(Date.now() - config.leaseMs)
          }),
        ),
        Effect.ensuring(
          Ref.update(held, (ids) => {
            const rest = new Set(ids)
            for (const e of claimed.events) rest.delete(e.id)
            return rest
          }).pipe(Effect.andThen(Effect.sync(() => failedKeys.done()))),
        ),
      )
      // Progress counts as a cycle: a long backlog drain must not look like a stalled loop.
      yield* recordCycle
      yield* Effect.logInfo("batch relayed").pipe(Effect.annotateLogs({ claimed: claimed.events.length, ...summary }))
    }).pipe(Effect.uninterruptible)

/** One run of the pipeline; ends when stopping, or fails with a database error. */
const pipeline = Effect.gen(function* () {
  const state = yield* RelayState
  const store = yield* OutboxStore
  const held = yield* Ref.make<ReadonlySet<string>>(new Set())
  const failedKeys = new FailedKeys()
  const rowsSeenAt = yield* Ref.make(0)
  yield* (yield* triggers(rowsSeenAt)).pipe(
    Stream.takeUntilEffect(() => Ref.get(state.stopping)),
    Stream.filterEffect(() => mayClaimOnTrigger),
    Stream.flatMap(() => claimUntilDrained(held, failedKeys, rowsSeenAt).pipe(Stream.onEnd(recordCycle))),
    // Claim the next batch while this one is published…
    Stream.buffer({ capacity: 1 }),
    Stream.mapEffect(publishClaimed(failedKeys)),
    // …and mark this one while the next is published.
    Stream.buffer({ capacity: 1 }),
    Stream.mapEffect(markPublished(held, failedKeys)),
    Stream.runDrain,
    Effect.onExit(() =>
      Ref.get(held).pipe(
        Effect.flatMap((ids) => store.release([...ids])),
        Effect.tap((n) => (n > 0 ? Effect.logInfo("released unpublished leases").pipe(Effect.annotateLogs({ count: n })) : Effect.void)),
        Effect.ignore,
      ),
    ),
  )
})

/** The relay loop: refuses an unknown schema, and rides out database outages with backoff. */
export const runRelay = Effect.gen(function* () {
  const state = yield* RelayState
  yield* requireCurrentSchema()
  yield* Effect.logInfo("relay started")
  yield* pipeline.pipe(
    Effect.tapError((e) =>
      Ref.set(state.lastError, e.message).pipe(
        Effect.andThen(Effect.logError("relay loop failed; retrying with backoff").pipe(Effect.annotateLogs({ error: e.message }))),
      ),
    ),
    Effect.retry({ schedule: backoffSchedule({ baseMs: 200, maxMs: 5_000 }), while: (e) => e._tag === "DatabaseError" }),
  )
  yield* Effect.logInfo("relay stopped")
})

/**
 * Runs the relay until interrupted (SIGTERM/SIGINT), then stops gracefully: no new
 * claims, the batch in flight gets SHUTDOWN_GRACE_MS to finish, unpublished leases are
 * released, and only then is the loop cut off.
 */
export const runRelayUntilStopped = Effect.gen(function* () {
  const state = yield* RelayState
  const config = yield* RelayConfig
  const relay = yield* Effect.forkDetach(runRelay)
  yield* Fiber.join(relay).pipe(
    Effect.onInterrupt(() =>
      Effect.gen(function* () {
        yield* Effect.logInfo("stopping: no new claims, finishing the batch in flight")
        yield* Ref.set(state.stopping, true)
        const finished = yield* Fiber.await(relay).pipe(Effect.timeout(Duration.millis(config.shutdownGraceMs)), Effect.option)
        if (Option.isNone(finished)) {
          yield* Effect.logWarning("grace period over; stopping the relay now")
          yield* Fiber.interrupt(relay)
        }
      }),
    ),
  )
})
