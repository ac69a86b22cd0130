/**
 * How long a batch may keep sending. The claim protocol's proof needs the old holder's sends
 * to end before its lease can expire, and a batch may make many sends (dead letters full then
 * trimmed, records one by one after a refusal), each bounded by PUBLISH_TIMEOUT_MS but not
 * their total. So before every send the batch asks here: when less than half the lease is
 * left, its leases are renewed (fenced like marks: only rows still held under the lease this
 * batch knows); a send starts only while at least two publish timeouts remain (a connect and
 * a send), otherwise the rest of the batch is given back untried. A slow but live broker
 * therefore means slower progress, never a takeover.
 */
import { Clock, Effect, Ref } from "effect"
import { RelayConfig } from "../config/config.ts"
import type { ClaimedEvent } from "../domain/outbox-event.ts"
import { type Lease, OutboxStore } from "../outbox/outbox-store.ts"

export interface SendBudget {
  /** Whether a send may start now; renews the batch's leases first when they run low. */
  readonly allowsSend: Effect.Effect<boolean>
  /** The lease each row of the batch is held under now (a renewal replaces it). */
  readonly leases: Effect.Effect<ReadonlyMap<string, string>>
}

interface BudgetState {
  readonly leases: ReadonlyMap<string, string>
  /** When the leases run out, by this process's clock (measured from before the statement that wrote them). */
  readonly expiresAt: number
}

export const makeSendBudget = Effect.fnUntraced(function* (
  events: ReadonlyArray<ClaimedEvent>,
  claimedAt: number,
  onRenewed: (leases: ReadonlyArray<Lease>) => Effect.Effect<void>,
) {
  const store = yield* OutboxStore
  const config = yield* RelayConfig
  const state = yield* Ref.make<BudgetState>({
    leases: new Map(events.map((e) => [e.id, e.lease])),
    expiresAt: claimedAt + config.leaseMs,
  })

  const renew = (current: BudgetState, startedAt: number) =>
    store.renewLeases([...current.leases].map(([id, lease]) => ({ id, lease }))).pipe(
      Effect.flatMap((renewed) =>
        Effect.gen(function* () {
          if (renewed.length === 0) return
          const leases = new Map(current.leases)
          for (const { id, lease } of renewed) leases.set(id, lease)
          yield* Ref.set(state, { leases, expiresAt: startedAt + config.leaseMs })
          yield* onRenewed(renewed)
        }),
      ),
      // The database is away: the leases keep their expiry, and the time check gives the rest back.
      Effect.catch((e) => Effect.logWarning("could not renew the batch's leases").pipe(Effect.annotateLogs({ error: e.message }))),
    )

  const allowsSend = Effect.gen(function* () {
    const now = yield* Clock.currentTimeMillis
    const current = yield* Ref.get(state)
    if (current.expiresAt - now < config.leaseMs / 2) yield* renew(current, now)
    const { expiresAt } = yield* Ref.get(state)
    return now + 2 * config.publishTimeoutMs <= expiresAt
  })

  return { allowsSend, leases: Effect.map(Ref.get(state), (s) => s.leases) } satisfies SendBudget
})
