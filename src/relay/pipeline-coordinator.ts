/**
 * Per-key order inside one instance's pipeline, as Effect state.
 *
 * The stages overlap: batch n+1 is claimed while batch n publishes. The claim lets an
 * instance take rows behind its own leases, so batch n+1 may hold later events of a key
 * whose event in batch n is not sent (failed, given back, waiting for a missing topic, its
 * dead letter refused…). Those later events must not overtake it. One rule covers every
 * route: an event left unsent puts its key on `holdBack` up to the highest batch claimed so
 * far, and the publish stage gives back that key's events in those batches untried.
 *
 * Holding feeds itself, though: a given-back batch is marked with its events released, and
 * the batch claimed ahead of that mark would have to be held too, and so on. So after any
 * hold-back, claims wait (`awaitingDrain`) until every batch in flight is marked; the next
 * claim then sees the unsent rows in the table, where the claim's own per-key check holds
 * the key back, and the hold-back list is cleared. A claim counts as in flight from the
 * moment it is admitted, so a claim whose statement is still running when a failure is
 * recorded is held back too.
 *
 * The state is one transactional ref: admission is a transaction that retries (waits) while
 * the pipeline drains, and wakes when a finished batch changes the state.
 */
import { Effect, TxRef } from "effect"
import type { ClaimedEvent } from "../domain/outbox-event.ts"
import type { Lease } from "../outbox/outbox-store.ts"

interface PipelineState {
  /** Sequence number the next admitted claim gets. */
  readonly nextSequence: number
  /** Claims admitted and not yet finished (marked, or found nothing). */
  readonly inFlight: number
  /**
   * Rows (id → lease) this instance claimed and has not yet tried to publish: what a stop
   * gives back. A published row is not given back: if its mark never lands, its lease expires
   * and the row is taken over (a counted duplicate), never quietly re-sent. Keyed by lease as
   * well as id: a row whose lease expired in flight may be claimed again by a later batch, and
   * the earlier batch's publish must not strike the later claim's entry.
   */
  readonly unpublished: ReadonlyMap<string, string>
  /** key → the highest batch sequence whose events of that key must be given back. */
  readonly holdBack: ReadonlyMap<string, number>
  /** Claims wait until the pipeline is empty (set by a hold-back, cleared when inFlight reaches 0). */
  readonly awaitingDrain: boolean
}

const initial: PipelineState = { nextSequence: 1, inFlight: 0, unpublished: new Map(), holdBack: new Map(), awaitingDrain: false }

export interface PipelineCoordinator {
  /** Waits while the pipeline drains after a hold-back, then admits one claim and gives its sequence. */
  readonly admitClaim: Effect.Effect<number>
  /** The admitted claim returned these rows (call in the same uninterruptible step as the claim). */
  readonly claimed: (events: ReadonlyArray<ClaimedEvent>) => Effect.Effect<void>
  /** For batch `sequence`: whether an event of a key must be given back behind an earlier unsent one. */
  readonly holdBackIn: (sequence: number) => Effect.Effect<(key: string | null) => boolean>
  /** Events of these keys were left unsent by a batch: later ones already claimed must wait. */
  readonly leftUnsent: (keys: Iterable<string | null>) => Effect.Effect<void>
  /** Publishing was attempted for these rows (sent, failed or dead): a stop no longer gives them back. */
  readonly published: (leases: ReadonlyArray<Lease>) => Effect.Effect<void>
  /** These rows' leases were renewed: a stop gives them back under the new lease. */
  readonly renewed: (leases: ReadonlyArray<Lease>) => Effect.Effect<void>
  /** A claim finished: its rows are marked or released (or it found none). */
  readonly finished: (leases: ReadonlyArray<Lease>) => Effect.Effect<void>
  /** Leases this instance holds and has not tried to publish. */
  readonly unpublished: Effect.Effect<ReadonlyArray<Lease>>
}

export const makePipelineCoordinator: Effect.Effect<PipelineCoordinator> = Effect.gen(function* () {
  const state = yield* TxRef.make(initial)

  const admitClaim: Effect.Effect<number> = Effect.tx(
    Effect.gen(function* () {
      const s = yield* TxRef.get(state)
      if (s.awaitingDrain) return yield* Effect.txRetry
      yield* TxRef.set(state, { ...s, nextSequence: s.nextSequence + 1, inFlight: s.inFlight + 1 })
      return s.nextSequence
    }),
  )

  const claimed = (events: ReadonlyArray<ClaimedEvent>) =>
    events.length === 0
      ? Effect.void
      : TxRef.update(state, (s) => {
          const unpublished = new Map(s.unpublished)
          for (const e of events) unpublished.set(e.id, e.lease)
          return { ...s, unpublished }
        })

  const without = (s: PipelineState, leases: ReadonlyArray<Lease>) => {
    if (leases.length === 0) return s.unpublished
    const unpublished = new Map(s.unpublished)
    for (const { id, lease } of leases) if (unpublished.get(id) === lease) unpublished.delete(id)
    return unpublished
  }

  const published = (leases: ReadonlyArray<Lease>) => TxRef.update(state, (s) => ({ ...s, unpublished: without(s, leases) }))

  const renewed = (leases: ReadonlyArray<Lease>) =>
    TxRef.update(state, (s) => {
      // Only rows still unpublished matter to a stop; a renewal never adds one back.
      if (!leases.some(({ id }) => s.unpublished.has(id))) return s
      const unpublished = new Map(s.unpublished)
      for (const { id, lease } of leases) if (unpublished.has(id)) unpublished.set(id, lease)
      return { ...s, unpublished }
    })

  const holdBackIn = (sequence: number) =>
    TxRef.get(state).pipe(
      Effect.map(
        ({ holdBack }) =>
          (key: string | null) =>
            key !== null && holdBack.size > 0 && (holdBack.get(key) ?? 0) >= sequence,
      ),
    )

  const leftUnsent = (keys: Iterable<string | null>) =>
    TxRef.update(state, (s) => {
      const held = [...keys].filter((key) => key !== null)
      if (held.length === 0) return s
      // Every batch admitted so far, including a claim whose statement is still running.
      const through = s.nextSequence - 1
      const holdBack = new Map(s.holdBack)
      for (const key of held) holdBack.set(key, through)
      return { ...s, holdBack, awaitingDrain: true }
    })

  const finished = (leases: ReadonlyArray<Lease>) =>
    TxRef.update(state, (s) => {
      const unpublished = without(s, leases)
      const inFlight = Math.max(0, s.inFlight - 1)
      // Empty pipeline: every unsent row is marked, so claims see them and hold their keys themselves.
      return inFlight === 0 ? { ...s, unpublished, inFlight, holdBack: new Map(), awaitingDrain: false } : { ...s, unpublished, inFlight }
    })

  return {
    admitClaim,
    claimed,
    holdBackIn,
    leftUnsent,
    published,
    renewed,
    finished,
    unpublished: TxRef.get(state).pipe(Effect.map((s) => [...s.unpublished].map(([id, lease]) => ({ id, lease })))),
  }
})
