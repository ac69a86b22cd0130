/**
 * The relay, top to bottom: a trigger (poll tick, or an insert's NOTIFY) → claim a
 * batch (repeated at once while batches come back full) → publish → mark. Publish and
 * mark run as one uninterruptible step, so a stop never leaves an acknowledged event
 * unmarked; leases claimed but not yet published are given back when the loop ends.
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
import { markOutcome } from "./mark-outcome.ts"
import { publishBatch } from "./publish-batch.ts"
import { RelayState } from "./relay-state.ts"

type Held = Ref.Ref<ReadonlySet<string>>

const claimBatch = Effect.fn("Relay.claimBatch")(function* (held: Held) {
  const store = yield* OutboxStore
  const config = yield* RelayConfig
  // Claiming and recording the lease as held happen together, so a stop in between cannot orphan it.
  const batch = yield* Effect.uninterruptible(
    store.claimDue(config.batchSize).pipe(Effect.tap((events) => Ref.update(held, (ids) => new Set([...ids, ...events.map((e) => e.id)])))),
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

/** What /healthz reads: the loop completed a cycle (read at run time, not when the effect was built). */
const recordCycle = Effect.gen(function* () {
  const state = yield* RelayState
  yield* Ref.set(state.lastCycleAt, Date.now())
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
 * inserts costs one extra claim, not one per insert.
 */
const triggers = Effect.gen(function* () {
  const config = yield* RelayConfig
  const ticks = Stream.tick(Duration.millis(config.pollIntervalMs))
  return (config.listenNotify ? ticks.pipe(Stream.merge(insertWakeUps)) : ticks).pipe(Stream.buffer({ capacity: 1, strategy: "sliding" }))
})

/** Batches for one trigger: claims again at once while they come back full, so a backlog drains without sleeping. */
const claimUntilDrained = (held: Held) =>
  Stream.paginate(undefined, () =>
    Effect.gen(function* () {
      const config = yield* RelayConfig
      // Untraced: an idle relay claims every poll, and a span each time would bury the publish traces.
      const batch = yield* claimBatch(held).pipe(Effect.withTracerEnabled(false))
      const more = batch.length >= config.batchSize && (yield* mayClaim)
      return [batch.length > 0 ? [batch] : [], more ? Option.some(undefined) : Option.none()] as const
    }),
  )

/**
 * After a batch found Kafka unreachable, claim nothing until a broker answers again: the
 * rows just failed wait for their retry time, and no other row burns an attempt on an outage.
 */
const waitForKafka = Effect.gen(function* () {
  const state = yield* RelayState
  const publisher = yield* Publisher
  yield* Ref.set(state.kafkaReachable, false)
  yield* Effect.logWarning("Kafka unreachable; claiming paused until a broker answers")
  yield* publisher.checkReachable.pipe(Effect.retry(backoffSchedule({ baseMs: 250, maxMs: 10_000 })))
  yield* Ref.set(state.kafkaReachable, true)
  yield* Effect.logInfo("Kafka reachable again; claiming resumes")
})

const publishAndMark = (held: Held) => (batch: ReadonlyArray<ClaimedEvent>) =>
  Effect.gen(function* () {
    const outcome = yield* publishBatch(batch)
    const summary = yield* markOutcome(outcome).pipe(
      Effect.ensuring(
        Ref.update(held, (ids) => {
          const rest = new Set(ids)
          for (const e of batch) rest.delete(e.id)
          return rest
        }),
      ),
    )
    // Progress counts as a cycle: a long backlog drain must not look like a stalled loop.
    yield* recordCycle
    yield* Effect.logInfo("batch relayed").pipe(Effect.annotateLogs({ claimed: batch.length, ...summary }))
    return outcome.kafkaUnavailable
  }).pipe(
    Effect.uninterruptible,
    Effect.flatMap((kafkaDown) => (kafkaDown ? waitForKafka : Effect.void)),
  )

/** One run of the pipeline; ends when stopping, or fails with a database error. */
const pipeline = Effect.gen(function* () {
  const state = yield* RelayState
  const store = yield* OutboxStore
  const held = yield* Ref.make<ReadonlySet<string>>(new Set())
  yield* (yield* triggers).pipe(
    Stream.takeUntilEffect(() => Ref.get(state.stopping)),
    Stream.filterEffect(() => mayClaimOnTrigger),
    Stream.flatMap(() => claimUntilDrained(held).pipe(Stream.onEnd(recordCycle))),
    Stream.mapEffect(publishAndMark(held)),
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
