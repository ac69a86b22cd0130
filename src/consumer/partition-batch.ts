/**
 * One kafkajs batch (one partition) in offset order: each message settled (processed,
 * skipped as a duplicate, or dead-lettered) before the next starts, so partition order
 * holds. Offsets are committed only for settled messages, i.e. after their transaction
 * committed: after the batch, and every `commitInterval` while it runs, so a slow or stuck
 * message does not hold back the commit of those settled before it. When the partition is
 * revoked (a rebalance) the message in flight is abandoned, its transaction rolled back,
 * and nothing more is committed: the next owner redelivers from the last commit and the
 * inbox turns what was done into skips.
 *
 * kafkajs fetches again only once every batch of the last fetch returned, so a batch that
 * took its time inside `eachBatch` would hold up every other partition. `handOffBatch`
 * therefore pauses the batch's partition, runs the batch as a fiber of its own and returns
 * at once: a slow message, a message retrying, or an outage wait holds only its partition.
 * The batch resumes its partition when it ends; kafkajs then fetches from the last
 * resolved (settled) offset.
 */
import { Clock, Deferred, Duration, Effect, Metric, Ref, Schedule, Semaphore } from "effect"
import { type ConsumedMessage, fromKafkaMessage } from "./consumed-message.ts"
import { consumerOldestInFlight } from "./consumer-stats.ts"
import type { GroupMembership, MembershipTerm } from "./group-membership.ts"
import type { PartitionBatch } from "./group-port.ts"
import type { MessageOutcome } from "./process-message.ts"

export interface BatchRunner<R> {
  readonly processMessage: (message: ConsumedMessage) => Effect.Effect<MessageOutcome, never, R>
  /** Called once a message is settled, before its offset is committed. */
  readonly afterMessage: (outcome: MessageOutcome) => Effect.Effect<void>
  /** True once the consumer is shutting down: finish the message in flight, commit, return. */
  readonly isStopping: () => boolean
  readonly commitInterval: Duration.Duration
  readonly consumerGroup: string
  /** A message in flight longer than this is logged once, at WARN. */
  readonly slowMessageWarning: Duration.Duration
}

/** How often the age of the message in flight is published (the gauge) and checked against the warning. */
const IN_FLIGHT_WATCH_INTERVAL = Duration.seconds(1)

// Errors kafkajs' heartbeat reports when this member must rejoin: its partitions are gone.
const LOST_MEMBERSHIP = new Set([
  "REBALANCE_IN_PROGRESS",
  "ILLEGAL_GENERATION",
  "UNKNOWN_MEMBER_ID",
  "NOT_COORDINATOR_FOR_GROUP",
  "FENCED_INSTANCE_ID",
])
const lostMembership = (error: unknown): boolean =>
  typeof error === "object" && error !== null && "type" in error && typeof error.type === "string" && LOST_MEMBERSHIP.has(error.type)

const errorText = (error: unknown) => (error instanceof Error ? error.message : String(error))

export const processPartitionBatch = <R>(runner: BatchRunner<R>) =>
  Effect.fn("IdempotentConsumer.processBatch")(function* (payload: PartitionBatch, term: MembershipTerm) {
    const { batch } = payload
    const revoked = yield* Deferred.make<void>()
    // A rebalance that kafkajs handled on its own (fetch loop, rejoin) revokes this batch too.
    yield* term.ended.pipe(Effect.andThen(Deferred.succeed(revoked, undefined)), Effect.forkScoped)
    const lastSettled = yield* Ref.make<string | undefined>(undefined)
    const lastCommitted = yield* Ref.make<string | undefined>(undefined)

    // Keeps the membership alive through long handlers and outage waits, and is how a
    // rebalance is noticed mid-batch (kafkajs throttles the actual requests).
    yield* Effect.tryPromise(() => payload.heartbeat()).pipe(
      Effect.catch((error) =>
        lostMembership(error.cause)
          ? Deferred.succeed(revoked, undefined)
          : Effect.logDebug("heartbeat failed").pipe(Effect.annotateLogs({ error: errorText(error.cause) })),
      ),
      Effect.repeat(Schedule.spaced("500 millis")),
      Effect.forkScoped,
    )

    const isRevoked = Deferred.isDone(revoked).pipe(Effect.map((done) => done || !term.isCurrent()))
    // The timer's commit and the batch's last commit never overlap, so offsets only move forward.
    const commitLock = yield* Semaphore.make(1)
    const commit = Effect.gen(function* () {
      const offset = yield* Ref.get(lastSettled)
      if (offset === undefined || offset === (yield* Ref.get(lastCommitted)) || (yield* isRevoked) || payload.isStale()) return
      const next = (BigInt(offset) + 1n).toString()
      yield* Effect.tryPromise(() =>
        payload.commitOffsetsIfNecessary({ topics: [{ topic: batch.topic, partitions: [{ partition: batch.partition, offset: next }] }] }),
      ).pipe(
        Effect.tap(() => Ref.set(lastCommitted, offset)),
        // Not fatal: the settled messages come again after a restart and are skipped by the inbox.
        Effect.catch((error) =>
          Effect.logWarning("offset commit failed; settled messages may be redelivered and skipped").pipe(
            Effect.annotateLogs({ topic: batch.topic, partition: batch.partition, offset: next, error: errorText(error.cause) }),
          ),
        ),
      )
    }).pipe(Semaphore.withPermit(commitLock))
    yield* Effect.sleep(runner.commitInterval).pipe(Effect.andThen(commit), Effect.forever, Effect.forkScoped)

    // The message in flight and since when: a stuck handler is seen on the gauge and in the
    // log while it is stuck, not only as lag once someone looks.
    const inFlight = yield* Ref.make<{ readonly offset: string; readonly since: number; warned: boolean } | undefined>(undefined)
    const oldestInFlight = Metric.withAttributes(consumerOldestInFlight, {
      consumer_group: runner.consumerGroup,
      topic: batch.topic,
      partition: String(batch.partition),
    })
    const slowAfterMs = Duration.toMillis(runner.slowMessageWarning)
    const watchInFlight = Effect.gen(function* () {
      const current = yield* Ref.get(inFlight)
      const ageMs = current === undefined ? 0 : (yield* Clock.currentTimeMillis) - current.since
      yield* Metric.update(oldestInFlight, ageMs / 1000)
      if (current !== undefined && !current.warned && ageMs >= slowAfterMs) {
        current.warned = true
        yield* Effect.logWarning("message in flight longer than slowMessageWarning; its partition waits behind it").pipe(
          Effect.annotateLogs({ topic: batch.topic, partition: batch.partition, offset: current.offset, in_flight_ms: ageMs }),
        )
      }
    })
    yield* Effect.addFinalizer(() => Metric.update(oldestInFlight, 0))
    yield* Effect.sleep(IN_FLIGHT_WATCH_INTERVAL).pipe(Effect.andThen(watchInFlight), Effect.forever, Effect.forkScoped)

    for (const kafkaMessage of batch.messages) {
      if (runner.isStopping() || (yield* isRevoked) || !payload.isRunning() || payload.isStale()) break
      const message = fromKafkaMessage(batch.topic, batch.partition, kafkaMessage)
      yield* Ref.set(inFlight, { offset: kafkaMessage.offset, since: yield* Clock.currentTimeMillis, warned: false })
      const outcome = yield* runner.processMessage(message).pipe(Effect.raceFirst(Deferred.await(revoked).pipe(Effect.as(undefined))))
      yield* Ref.set(inFlight, undefined)
      if (outcome === undefined) break
      yield* runner.afterMessage(outcome)
      payload.resolveOffset(kafkaMessage.offset)
      yield* Ref.set(lastSettled, kafkaMessage.offset)
    }
    if (yield* isRevoked) {
      yield* Effect.logInfo("rebalance: batch abandoned; its uncommitted messages will be redelivered and skipped").pipe(
        Effect.annotateLogs({ topic: batch.topic, partition: batch.partition, last_committed: (yield* Ref.get(lastCommitted)) ?? "none" }),
      )
    }
    yield* commit
  }, Effect.scoped)

export interface BatchHandOff {
  /** Runs the batch as a fiber of the consumer (a stop waits for it); the promise settles when it ends. */
  readonly run: (payload: PartitionBatch, term: MembershipTerm) => Promise<void>
  readonly membership: GroupMembership
  readonly isStopping: () => boolean
  readonly onBatchDefect: (error: unknown, payload: PartitionBatch) => void
}

/** kafkajs' `eachBatch`: pauses the partition, starts its batch, returns without waiting for it. */
export const handOffBatch = (handOff: BatchHandOff) => {
  // The batch running per partition: a new batch of one waits for the last one to end, so
  // one partition never has two batches at once (its last owner term may still be winding down).
  const running = new Map<string, Promise<void>>()
  return async (payload: PartitionBatch): Promise<void> => {
    if (handOff.isStopping()) return
    // The term the batch was fetched in: if a rebalance comes before its fiber starts, it starts revoked.
    const term = handOff.membership.currentTerm()
    const key = `${payload.batch.topic}|${payload.batch.partition}`
    await running.get(key)
    if (handOff.isStopping()) return
    const resume = payload.pause()
    const done = handOff
      .run(payload, term)
      .catch((error: unknown) => handOff.onBatchDefect(error, payload))
      .finally(() => {
        if (running.get(key) === done) running.delete(key)
        // On a stop every topic is paused for good; otherwise kafkajs fetches from the last settled offset.
        if (!handOff.isStopping()) resume()
      })
    running.set(key, done)
  }
}
