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

/** A row this pipeline claimed and has not finished publishing, under the lease it holds now. */
export interface HeldRow {
  readonly lease: string
  /** When the lease runs out, by this process's clock (from before the statement that wrote it). */
  readonly expiresAt: number
  /** The claim that holds it: a row claimed again by a later batch belongs to that batch. */
  readonly sequence: number
}

/** A renewal of one row: from the lease it was held under to the new one. */
export interface Renewal {
  readonly id: string
  readonly from: string
  readonly to: string
}

interface PipelineState {
  /** Sequence number the next admitted claim gets. */
  readonly nextSequence: number
  /** Claims admitted and not yet finished (marked, or found nothing). */
  readonly inFlight: number
  /**
   * Rows this pipeline claimed and has not yet tried to publish: what the lease keeper renews
   * and what a stop gives back. A published row is not given back: if its mark never lands,
   * its lease expires and the row is taken over (a counted duplicate), never quietly re-sent.
   */
  readonly unpublished: ReadonlyMap<string, HeldRow>
  /** key → the highest batch sequence whose events of that key must be given back. */
  readonly holdBack: ReadonlyMap<string, number>
  /** Claims wait until the pipeline is empty (set by a hold-back, cleared when inFlight reaches 0). */
  readonly awaitingDrain: boolean
}

const initial: PipelineState = { nextSequence: 1, inFlight: 0, unpublished: new Map(), holdBack: new Map(), awaitingDrain: false }

export interface PipelineCoordinator {
  /** Waits while the pipeline drains after a hold-back, then admits one claim and gives its sequence. */
  readonly admitClaim: Effect.Effect<number>
  /** Claim `sequence` returned these rows (call in the same uninterruptible step as the claim). */
  readonly claimed: (sequence: number, events: ReadonlyArray<ClaimedEvent>, expiresAt: number) => Effect.Effect<void>
  /** For batch `sequence`: whether an event of a key must be given back behind an earlier unsent one. */
  readonly holdBackIn: (sequence: number) => Effect.Effect<(key: string | null) => boolean>
  /** Events of these keys were left unsent by a batch: later ones already claimed must wait. */
  readonly leftUnsent: (keys: Iterable<string | null>) => Effect.Effect<void>
  /** Rows of batch `sequence` not yet through publishing, with their current leases. */
  readonly heldBy: (sequence: number) => Effect.Effect<ReadonlyMap<string, HeldRow>>
  /**
   * Batch `sequence` is through publishing: its rows leave the renewed, given-back-at-stop set,
   * and the leases they are held under now are what its marks and releases must name.
   */
  readonly published: (sequence: number) => Effect.Effect<ReadonlyMap<string, string>>
  /** Leases renewed at `startedAt`; a row whose lease changed meanwhile (claimed again) is left alone. */
  readonly renewed: (renewals: ReadonlyArray<Renewal>, expiresAt: number) => Effect.Effect<void>
  /** Batch `sequence` finished: its rows are marked or released (or it found none). */
  readonly finished: (sequence: number) => Effect.Effect<void>
  /** Rows this pipeline holds and has not tried to publish. */
  readonly unpublished: Effect.Effect<ReadonlyMap<string, HeldRow>>
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

  const claimed = (sequence: number, events: ReadonlyArray<ClaimedEvent>, expiresAt: number) =>
    events.length === 0
      ? Effect.void
      : TxRef.update(state, (s) => {
          const unpublished = new Map(s.unpublished)
          for (const e of events) unpublished.set(e.id, { lease: e.lease, expiresAt, sequence })
          return { ...s, unpublished }
        })

  /** The rows of batch `sequence` taken out of the unpublished set, with their leases. */
  const take = (s: PipelineState, sequence: number) => {
    const taken = new Map<string, string>()
    const unpublished = new Map(s.unpublished)
    for (const [id, held] of s.unpublished) {
      if (held.sequence !== sequence) continue
      taken.set(id, held.lease)
      unpublished.delete(id)
    }
    return { taken, unpublished }
  }

  const heldBy = (sequence: number) =>
    Effect.map(TxRef.get(state), (s) => new Map([...s.unpublished].filter(([, held]) => held.sequence === sequence)))

  const published = (sequence: number) =>
    TxRef.modify(state, (s): [ReadonlyMap<string, string>, PipelineState] => {
      const { taken, unpublished } = take(s, sequence)
      return [taken, { ...s, unpublished }]
    })

  const renewed = (renewals: ReadonlyArray<Renewal>, expiresAt: number) =>
    TxRef.update(state, (s) => {
      const unpublished = new Map(s.unpublished)
      for (const { id, from, to } of renewals) {
        const held = unpublished.get(id)
        if (held?.lease === from) unpublished.set(id, { ...held, lease: to, expiresAt })
      }
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

  const finished = (sequence: number) =>
    TxRef.update(state, (s) => {
      const { unpublished } = take(s, sequence)
      const inFlight = Math.max(0, s.inFlight - 1)
      // Empty pipeline: every unsent row is marked, so claims see them and hold their keys themselves.
      return inFlight === 0 ? { ...s, unpublished, inFlight, holdBack: new Map(), awaitingDrain: false } : { ...s, unpublished, inFlight }
    })

  return {
    admitClaim,
    claimed,
    holdBackIn,
    leftUnsent,
    heldBy,
    published,
    renewed,
    finished,
    unpublished: Effect.map(TxRef.get(state), (s) => s.unpublished),
  }
})
