/**
 * kafkajs can rejoin the group while a batch is still being processed (its fetch loop
 * sees the rebalance first), and after the rejoin its heartbeats succeed again, so a
 * batch cannot rely on a heartbeat error to learn that its partition was revoked. Every
 * rebalance or rejoin ends the current term instead: a batch started in an earlier term
 * stops, and commits nothing more (eager rebalancing revokes every partition anyway).
 */
import { Deferred, Effect } from "effect"

export interface MembershipTerm {
  /** False once a rebalance started after this term began. */
  readonly isCurrent: () => boolean
  /** Completes when the term ends. */
  readonly ended: Effect.Effect<void>
}

export interface GroupMembership {
  readonly currentTerm: () => MembershipTerm
  /** Called from kafkajs' REBALANCING and GROUP_JOIN events (synchronously, so no commit can slip in between). */
  readonly endTerm: () => void
}

export const makeGroupMembership = (): GroupMembership => {
  const newTerm = () => {
    const deferred = Deferred.makeUnsafe<void>()
    const term: MembershipTerm = { isCurrent: () => current === term, ended: Deferred.await(deferred) }
    return { term, deferred }
  }
  let { term: current, deferred } = newTerm()
  return {
    currentTerm: () => current,
    endTerm: () => {
      const ending = deferred
      ;({ term: current, deferred } = newTerm())
      Deferred.doneUnsafe(ending, Effect.void)
    },
  }
}
