/**
 * The relay, top to bottom: a trigger (poll tick, busy-poll tick, or an insert's NOTIFY) →
 * claim a batch (again at once while batches come back full) → publish → mark. The three
 * stages overlap: the next batch is claimed while one publishes and the one before is
 * marked. That is safe for per-key order because a claim never takes a row while an older
 * row of its key is pending elsewhere, and the pipeline coordinator holds back, in batches
 * already claimed, the keys an earlier batch left unsent. Publishing and marking are each
 * uninterruptible; on a stop the batches in flight go through both, and leases that were
 * not published are given back.
 */
import { Clock, Duration, Effect, Fiber, Metric, Option, Ref, Stream } from "effect"
import { RelayConfig } from "../config/config.ts"
import { backoffSchedule } from "../domain/backoff.ts"
import type { ClaimedEvent } from "../domain/outbox-event.ts"
import { Publisher } from "../kafka/publisher.ts"
import { OutboxStore } from "../outbox/outbox-store.ts"
import { batchSize as batchSizeMetric, leaseTakeovers } from "../telemetry/metrics.ts"
import { type LeaseKeeper, makeLeaseKeeper } from "./lease-keeper.ts"
import { markOutcome } from "./mark-outcome.ts"
import { makePipelineCoordinator, type PipelineCoordinator } from "./pipeline-coordinator.ts"
import { type BatchOutcome, publishBatch } from "./publish-batch.ts"
import { RelayEvents } from "./relay-events.ts"
import { RelayState } from "./relay-state.ts"

interface Claimed {
  readonly events: ReadonlyArray<ClaimedEvent>
  /** When the claim started (before its statement ran). */
  readonly claimedAt: number
  readonly sequence: number
}

interface Published {
  readonly claimed: Claimed
  readonly outcome: BatchOutcome
  /** The lease each row is held under after publishing (renewed while it waited and published). */
  readonly leases: ReadonlyMap<string, string>
}

/** Not paused and not stopping. */
const isClaimingOn = Effect.gen(function* () {
  const state = yield* RelayState
  return !(yield* Ref.get(state.paused)) && !(yield* Ref.get(state.stopping))
})

/**
 * What /healthz reads: the loop completed a cycle. While Kafka is down nothing completes:
 * claims may still come back empty, but the loop cannot do its work.
 */
const recordCycle = Effect.gen(function* () {
  const state = yield* RelayState
  if (yield* Ref.get(state.kafkaReachable)) yield* Ref.set(state.lastCycleAt, yield* Clock.currentTimeMillis)
})

/** A trigger while paused is a cycle too: the loop is alive, it just claims nothing. */
const claimingOnAtTrigger = Effect.gen(function* () {
  const on = yield* isClaimingOn
  if (!on) {
    yield* recordCycle
    yield* (yield* RelayEvents).emit({ _tag: "TriggerIgnored" })
  }
  return on
})

/**
 * Poll ticks merged with insert wake-ups. The sliding buffer of one coalesces whatever
 * arrives while a cycle runs into a single next trigger, so a burst of inserts costs one
 * extra claim, not one per insert. While rows keep arriving (a claim found some less than
 * POLL_INTERVAL_MS ago) the poll runs at BUSY_POLL_INTERVAL_MS: under load, latency then
 * does not hang on NOTIFY, which high-rate writers may turn off because it serialises their
 * commits, and an idle relay still costs one claim per interval.
 */
const triggers = (rowsSeenAt: Ref.Ref<number>) =>
  Effect.gen(function* () {
    const config = yield* RelayConfig
    const store = yield* OutboxStore
    const idleTicks = Stream.tick(Duration.millis(config.pollIntervalMs))
    const busyTicks = Stream.tick(Duration.millis(config.busyPollIntervalMs)).pipe(
      Stream.filterEffect(() =>
        Effect.map(Effect.all([Ref.get(rowsSeenAt), Clock.currentTimeMillis]), ([at, now]) => now - at < config.pollIntervalMs),
      ),
    )
    const ticks = Stream.merge(idleTicks, busyTicks)
    return (config.listenNotify ? ticks.pipe(Stream.merge(store.insertWakeUps)) : ticks).pipe(
      Stream.buffer({ capacity: 1, strategy: "sliding" }),
    )
  })

/** Claims a batch under a sequence number from the coordinator, and records its leases as ours. */
const claimBatch = Effect.fn("Relay.claimBatch")(function* (coordinator: PipelineCoordinator, after: string) {
  const store = yield* OutboxStore
  const config = yield* RelayConfig
  const relayEvents = yield* RelayEvents
  const sequence = yield* coordinator.admitClaim
  const claimedAt = yield* Clock.currentTimeMillis
  // Claiming and recording the leases happen together, so a stop in between cannot orphan one.
  const events = yield* Effect.uninterruptible(
    store.claimDue(config.batchSize, after).pipe(
      Effect.tap((events) => coordinator.claimed(sequence, events, claimedAt + config.leaseMs)),
      Effect.onError(() => coordinator.finished(sequence)),
    ),
  )
  if (events.length === 0) {
    yield* coordinator.finished(sequence)
    yield* relayEvents.emit({ _tag: "ClaimedNothing" })
    return { events, claimedAt, sequence } satisfies Claimed
  }
  yield* Metric.update(batchSizeMetric, events.length)
  const takenOver = events.filter((e) => e.takenOverFrom !== null)
  if (takenOver.length > 0) {
    yield* Metric.update(leaseTakeovers, takenOver.length)
    yield* Effect.logWarning("took over rows whose lease expired; they may already be on Kafka (a duplicate)").pipe(
      Effect.annotateLogs({ count: takenOver.length, from: [...new Set(takenOver.map((e) => e.takenOverFrom))].join(",") }),
    )
  }
  return { events, claimedAt, sequence } satisfies Claimed
})

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

const startOfPass = Effect.map(Clock.currentTimeMillis, (now): Cursor => ({ after: "0", passStartedAt: now }))

/** Batches for one trigger: claims again at once while they come back full, so a backlog drains without sleeping. */
const claimUntilDrained = (coordinator: PipelineCoordinator, rowsSeenAt: Ref.Ref<number>) =>
  Stream.unwrap(
    Effect.map(startOfPass, (first) =>
      Stream.paginate(first, (cursor) =>
        Effect.gen(function* () {
          const config = yield* RelayConfig
          const now = yield* Clock.currentTimeMillis
          const from = now - cursor.passStartedAt > config.pollIntervalMs ? yield* startOfPass : cursor
          // Untraced: an idle relay claims every poll, and a span each time would bury the publish traces.
          const claimed = yield* claimBatch(coordinator, from.after).pipe(Effect.withTracerEnabled(false))
          if (claimed.events.length > 0) yield* Ref.set(rowsSeenAt, claimed.claimedAt)
          const more = claimed.events.length >= config.batchSize && (yield* isClaimingOn)
          return [
            claimed.events.length > 0 ? [claimed] : [],
            more ? Option.some({ after: claimed.events.at(-1)!.id, passStartedAt: from.passStartedAt }) : Option.none(),
          ] as const
        }),
      ),
    ),
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
 * Publishes a claimed batch. After a batch found Kafka down, its outcome goes on to be marked
 * (FAILED, with backoff) at once, and the next batch waits here until a broker answers; the
 * full buffers then hold the claim stage back, so nothing else is claimed during the outage.
 */
const publishClaimed = (coordinator: PipelineCoordinator, keeper: LeaseKeeper) => (claimed: Claimed) =>
  Effect.gen(function* () {
    const state = yield* RelayState
    if (!(yield* Ref.get(state.kafkaReachable))) yield* waitForKafka
    const mustHoldBack = yield* coordinator.holdBackIn(claimed.sequence)
    // The budget gives the batch back untried if its leases could not be kept (lease-keeper.ts).
    const budget = keeper.budgetFor(claimed.sequence)
    const [outcome, leases] = yield* publishBatch(claimed.events, (e) => mustHoldBack(e.aggregateKey), budget).pipe(
      Effect.flatMap((o) => Effect.map(coordinator.published(claimed.sequence), (leases) => [o, leases] as const)),
      Effect.uninterruptible,
    )
    yield* coordinator.leftUnsent([...outcome.failed.map((f) => f.event.aggregateKey), ...outcome.givenBack.map((e) => e.aggregateKey)])
    if (outcome.kafkaUnavailable) yield* Ref.set(state.kafkaReachable, false)
    return { claimed, outcome, leases } satisfies Published
  })

/** Writes the outcome back, then lets the coordinator count the batch out of the pipeline. */
const markPublished =
  (coordinator: PipelineCoordinator) =>
  ({ claimed, outcome, leases }: Published) =>
    Effect.gen(function* () {
      const relayEvents = yield* RelayEvents
      const ids = claimed.events.map((e) => e.id)
      const summary = yield* markOutcome(outcome, leases).pipe(Effect.ensuring(coordinator.finished(claimed.sequence)))
      // Progress counts as a cycle: a long backlog drain must not look like a stalled loop.
      yield* recordCycle
      yield* relayEvents.emit({ _tag: "BatchMarked", ids, summary })
      yield* Effect.logInfo("batch relayed").pipe(
        Effect.annotateLogs({
          claimed: claimed.events.length,
          sent: summary.sent,
          failed: summary.failed,
          dead: summary.dead,
          given_back: summary.givenBack,
          lost: summary.lost,
          unmarkable: summary.unmarkable,
        }),
      )
    }).pipe(Effect.uninterruptible)

/** Gives back the leases of rows that were claimed but never published (a stop, a database error). */
const releaseUnpublished = (coordinator: PipelineCoordinator) =>
  Effect.gen(function* () {
    const store = yield* OutboxStore
    const relayEvents = yield* RelayEvents
    const count = yield* store.release([...(yield* coordinator.unpublished)].map(([id, held]) => ({ id, lease: held.lease })))
    if (count > 0) yield* Effect.logInfo("released unpublished leases").pipe(Effect.annotateLogs({ count }))
    yield* relayEvents.emit({ _tag: "LeasesReleased", count })
  }).pipe(
    Effect.catch((e) =>
      Effect.logWarning("could not release unpublished leases; they come back when they expire").pipe(
        Effect.annotateLogs({ error: e.message }),
      ),
    ),
  )

/** One run of the pipeline; ends when stopping, or fails with a database error. */
const pipeline = Effect.gen(function* () {
  const state = yield* RelayState
  // A fresh coordinator per run: a run that failed took its batches in flight with it.
  const coordinator = yield* makePipelineCoordinator
  const keeper = yield* makeLeaseKeeper(coordinator)
  // Renews the leases of rows waiting in the pipeline or being published; ends with this run.
  yield* Effect.forkChild(keeper.keep)
  const rowsSeenAt = yield* Ref.make(0)
  yield* (yield* triggers(rowsSeenAt)).pipe(
    Stream.takeUntilEffect(() => Ref.get(state.stopping)),
    Stream.filterEffect(() => claimingOnAtTrigger),
    Stream.flatMap(() => claimUntilDrained(coordinator, rowsSeenAt).pipe(Stream.onEnd(recordCycle))),
    // Claim the next batch while this one is published…
    Stream.buffer({ capacity: 1 }),
    Stream.mapEffect(publishClaimed(coordinator, keeper)),
    // …and mark this one while the next is published.
    Stream.buffer({ capacity: 1 }),
    Stream.mapEffect(markPublished(coordinator)),
    Stream.runDrain,
    Effect.onExit(() => releaseUnpublished(coordinator)),
  )
})

/** The relay loop: refuses an unknown schema, and rides out database outages with backoff. */
export const runRelay = Effect.gen(function* () {
  const state = yield* RelayState
  const store = yield* OutboxStore
  yield* store.requireCurrentSchema
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
