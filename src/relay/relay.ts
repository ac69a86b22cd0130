/**
 * The relay, top to bottom: a trigger (poll tick) → claim a batch (repeated at once
 * while batches come back full) → publish → mark. Publish and mark run as one
 * uninterruptible step, so a stop never leaves an acknowledged event unmarked; leases
 * claimed but not yet published are given back when the loop stops.
 */
import { Duration, Effect, Layer, Metric, Option, Ref, Stream } from "effect"
import { RelayConfig } from "../config/config.ts"
import type { ClaimedEvent } from "../domain/outbox-event.ts"
import { OutboxStore } from "../outbox/outbox-store.ts"
import { requireCurrentSchema } from "../outbox/schema-migrator.ts"
import { batchSize as batchSizeMetric, leaseTakeovers } from "../telemetry/metrics.ts"
import { backoffSchedule } from "./backoff.ts"
import { markOutcome } from "./mark-outcome.ts"
import { publishBatch } from "./publish-batch.ts"
import { RelayState } from "./relay-state.ts"

const claimBatch = Effect.fn("Relay.claimBatch")(function* (held: Ref.Ref<ReadonlySet<string>>) {
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

/** Batches for one trigger: claims again at once while they come back full, so a backlog drains without sleeping. */
const claimUntilDrained = (held: Ref.Ref<ReadonlySet<string>>) =>
  Stream.paginate(undefined, () =>
    Effect.gen(function* () {
      const config = yield* RelayConfig
      const batch = yield* claimBatch(held)
      return [batch.length > 0 ? [batch] : [], batch.length >= config.batchSize ? Option.some(undefined) : Option.none()] as const
    }),
  )

const publishAndMark = (held: Ref.Ref<ReadonlySet<string>>) => (batch: ReadonlyArray<ClaimedEvent>) =>
  publishBatch(batch).pipe(
    Effect.flatMap(markOutcome),
    Effect.ensuring(
      Ref.update(held, (ids) => {
        const rest = new Set(ids)
        for (const e of batch) rest.delete(e.id)
        return rest
      }),
    ),
    Effect.tap((s) =>
      Effect.logInfo("batch relayed").pipe(
        Effect.annotateLogs({ claimed: batch.length, sent: s.sent, failed: s.failed, dead: s.dead, held: s.held, lost: s.lost }),
      ),
    ),
    Effect.uninterruptible,
  )

/** One run of the pipeline; ends only with a database error (the caller backs off and runs it again). */
const pipeline = Effect.gen(function* () {
  const config = yield* RelayConfig
  const state = yield* RelayState
  const store = yield* OutboxStore
  const held = yield* Ref.make<ReadonlySet<string>>(new Set())
  const triggers = Stream.tick(Duration.millis(config.pollIntervalMs))
  yield* triggers.pipe(
    Stream.filterEffect(() => Effect.map(Ref.get(state.paused), (paused) => !paused)),
    Stream.flatMap(() => claimUntilDrained(held).pipe(Stream.onEnd(Ref.set(state.lastCycleAt, Date.now())))),
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
})

/** The relay as a layer: the loop runs in the background for the layer's lifetime. */
export const RelayLive = Layer.effectDiscard(Effect.forkScoped(runRelay))
