/**
 * Leases live as long as their sends. The claim protocol's proof needs an old holder's sends to
 * end before its lease can expire, yet a batch may wait behind a slow one in the pipeline, and
 * may make many sends itself (dead letters full then trimmed, records one by one after a
 * refusal), each bounded by PUBLISH_TIMEOUT_MS but not their total. So:
 * - while rows are held and not yet through publishing (waiting in the pipeline or being
 *   published), their leases are renewed every quarter lease once less than half is left, fenced
 *   like marks: only rows still held under the lease this pipeline knows;
 * - before every send a batch asks its budget: a send starts only while at least two publish
 *   timeouts (a connect and a send) remain on every lease of the batch; otherwise the rest of
 *   the batch is given back untried. If renewals fail (the database is away), time runs out and
 *   the batch gives back instead of outliving its lease.
 * A slow but live broker therefore means slower progress, never a takeover.
 */
import { Clock, Duration, Effect, Semaphore } from "effect"
import { RelayConfig } from "../config/config.ts"
import { OutboxStore } from "../outbox/outbox-store.ts"
import type { PipelineCoordinator } from "./pipeline-coordinator.ts"

/** Asked before every send of one batch. */
export interface SendBudget {
  /** Whether a send may start now; renews the batch's leases first when they run low. */
  readonly allowsSend: Effect.Effect<boolean>
}

export interface LeaseKeeper {
  /** Renews every held row (or batch `sequence`'s) whose lease has less than half left. */
  readonly renewDue: (sequence?: number) => Effect.Effect<void>
  readonly budgetFor: (sequence: number) => SendBudget
  /** Renews on a schedule, for as long as the pipeline runs. */
  readonly keep: Effect.Effect<never>
}

export const makeLeaseKeeper = Effect.fnUntraced(function* (coordinator: PipelineCoordinator) {
  const store = yield* OutboxStore
  const config = yield* RelayConfig
  // One renewal at a time: two renewals from the same lease would make one of them miss.
  const lock = yield* Semaphore.make(1)

  const renewDue = (sequence?: number) =>
    lock.withPermits(1)(
      Effect.gen(function* () {
        const startedAt = yield* Clock.currentTimeMillis
        const due = [...(yield* coordinator.unpublished)].filter(
          ([, held]) => (sequence === undefined || held.sequence === sequence) && held.expiresAt - startedAt < config.leaseMs / 2,
        )
        if (due.length === 0) return
        const renewed = yield* store.renewLeases(due.map(([id, held]) => ({ id, lease: held.lease })))
        const from = new Map(due.map(([id, held]) => [id, held.lease]))
        yield* coordinator.renewed(
          renewed.map(({ id, lease }) => ({ id, from: from.get(id)!, to: lease })),
          startedAt + config.leaseMs,
        )
      }).pipe(
        // The database is away: the leases keep their expiry, and budgets give the rest back in time.
        Effect.catch((e) => Effect.logWarning("could not renew leases").pipe(Effect.annotateLogs({ error: e.message }))),
      ),
    )

  const budgetFor = (sequence: number): SendBudget => ({
    allowsSend: Effect.gen(function* () {
      yield* renewDue(sequence)
      const held = yield* coordinator.heldBy(sequence)
      if (held.size === 0) return true
      const now = yield* Clock.currentTimeMillis
      const expiresAt = Math.min(...[...held.values()].map((h) => h.expiresAt))
      return now + 2 * config.publishTimeoutMs <= expiresAt
    }),
  })

  const keep = Effect.forever(Effect.andThen(Effect.sleep(Duration.millis(config.leaseMs / 4)), renewDue()))

  return { renewDue, budgetFor, keep } satisfies LeaseKeeper
})
