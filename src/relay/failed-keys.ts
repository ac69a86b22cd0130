/**
 * Per-key order inside one instance's pipeline. A batch may be claimed while earlier
 * batches are still in flight, and may then hold later events of their keys (the claim
 * lets an instance take rows behind its own leases). If an earlier batch fails for a key,
 * those later events must not overtake it: this remembers which keys failed, so the
 * publish stage gives such events back instead. Once the failure is marked, new claims
 * see the failed row and hold the key back by themselves; only batches claimed before
 * that moment still need holding.
 *
 * Holding feeds itself, though: a batch held back is handed back at its mark, so the
 * batch claimed ahead of that mark must be held too, and so on; with the claim stage
 * always one batch ahead, no batch would ever be published again (seen after a Kafka
 * outage: every batch `held`, none sent). So after a failure or hand-back, claiming
 * waits until every batch in flight is marked (`mayClaim`): the next claim comes after
 * all those marks and needs no holding.
 */
export class FailedKeys {
  /** Batches whose failure for the key is published but not yet marked. */
  private readonly unmarked = new Map<string, Set<number>>()
  /** When the key's latest failure was marked. */
  private readonly markedAt = new Map<string, number>()
  /** Batches claimed and not yet marked. */
  private inFlight = 0
  /** A key failed or was handed back since the pipeline was last empty. */
  private draining = false

  /** A batch was claimed (it will be marked, then `done`). */
  claimed(): void {
    this.inFlight++
  }

  /** A batch was marked (or its mark gave up). */
  done(): void {
    this.inFlight = Math.max(0, this.inFlight - 1)
    if (this.inFlight === 0) this.draining = false
  }

  /** Whether the claim stage may claim now: not while a failure's batches in flight are still unmarked. */
  get mayClaim(): boolean {
    return !this.draining
  }

  /** Whether an event of `key` in a batch claimed at `claimedAt` must wait behind an earlier failure. */
  mustWait(key: string | null, claimedAt: number): boolean {
    if (key === null) return false
    return (this.unmarked.get(key)?.size ?? 0) > 0 || claimedAt <= (this.markedAt.get(key) ?? Number.NEGATIVE_INFINITY)
  }

  failed(batch: number, keys: Iterable<string | null>): void {
    for (const key of keys) {
      if (key === null) continue
      this.draining = true
      const batches = this.unmarked.get(key) ?? new Set<number>()
      batches.add(batch)
      this.unmarked.set(key, batches)
    }
  }

  marked(batch: number, keys: Iterable<string | null>, now: number): void {
    for (const key of keys) {
      if (key === null) continue
      const batches = this.unmarked.get(key)
      batches?.delete(batch)
      if (batches?.size === 0) this.unmarked.delete(key)
      this.markedAt.set(key, now)
    }
  }

  /** A batch claimed before `horizon` is given back by the lease check, so older marks no longer matter. */
  forgetBefore(horizon: number): void {
    for (const [key, at] of this.markedAt) if (at < horizon) this.markedAt.delete(key)
  }
}
