/**
 * Per-key order inside one instance's pipeline. A batch may be claimed while earlier
 * batches are still in flight, and may then hold later events of their keys (the claim
 * lets an instance take rows behind its own leases). If an earlier batch fails for a key,
 * those later events must not overtake it: this remembers which keys failed, so the
 * publish stage gives such events back instead. Once the failure is marked, new claims
 * see the failed row and hold the key back by themselves; only batches claimed before
 * that moment still need holding.
 */
export class FailedKeys {
  /** Batches whose failure for the key is published but not yet marked. */
  private readonly unmarked = new Map<string, Set<number>>()
  /** When the key's latest failure was marked. */
  private readonly markedAt = new Map<string, number>()

  /** Whether an event of `key` in a batch claimed at `claimedAt` must wait behind an earlier failure. */
  mustWait(key: string | null, claimedAt: number): boolean {
    if (key === null) return false
    return (this.unmarked.get(key)?.size ?? 0) > 0 || claimedAt <= (this.markedAt.get(key) ?? Number.NEGATIVE_INFINITY)
  }

  failed(batch: number, keys: Iterable<string | null>): void {
    for (const key of keys) {
      if (key === null) continue
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
