/**
 * A Kafka consumer group in memory, as the consumer's core sees one (group-port.ts): one
 * topic's partitions as logs, the group's committed offsets, members with a generation,
 * eager rebalancing (every member's term ends, every partition is assigned again and fetched
 * from the committed offset), pause/resume and resolved positions per member.
 *
 * It keeps the broker's side of the contract (contract.ts): a commit from a member that no
 * longer owns the partition is refused as ILLEGAL_GENERATION, a heartbeat after a rebalance
 * fails with REBALANCE_IN_PROGRESS. It also keeps kafkajs' weak spot: a member that rejoined
 * and got the same partition back has its commits accepted, whichever batch sends them. So a
 * commit from a batch fetched in an earlier generation that lands is recorded as a violation:
 * only the consumer's own revoke check can keep it out.
 */
import type { KafkaMessage } from "kafkajs"
import type { GroupMembership } from "../../../src/consumer/group-membership.ts"
import type { PartitionBatch } from "../../../src/consumer/group-port.ts"

export const SIM_TOPIC = "sim.clicks"

export interface FakeMember {
  readonly id: string
  readonly membership: GroupMembership
  alive: boolean
  /** Partitions assigned in the current generation. */
  assigned: Set<number>
  paused: Set<number>
  /** Next offset to fetch per partition (kafkajs' resolved position). */
  readonly position: Map<number, number>
  /** Partitions with an eachBatch call that has not returned yet. */
  readonly inFetch: Set<number>
}

export interface CommitRecord {
  readonly member: string
  readonly partition: number
  readonly next: number
  readonly batchGeneration: number
  readonly generation: number
}

export class FakeGroup {
  readonly logs: Array<Array<KafkaMessage>>
  readonly committed = new Map<number, number>()
  readonly members = new Map<string, FakeMember>()
  readonly commits: Array<CommitRecord> = []
  readonly violations: Array<string> = []
  generation = 0

  constructor(partitions: number) {
    this.logs = Array.from({ length: partitions }, () => [])
  }

  produce(partition: number, headers: Record<string, string>, value: string, at: number): void {
    const log = this.logs[partition]!
    log.push({
      key: Buffer.from(`k-${partition}`),
      value: Buffer.from(value),
      timestamp: String(at),
      attributes: 0,
      offset: String(log.length),
      headers: Object.fromEntries(Object.entries(headers).map(([k, v]) => [k, Buffer.from(v)])),
    })
  }

  join(member: FakeMember): void {
    this.members.set(member.id, member)
    this.rebalance()
  }

  /** The member is gone (left or its session expired): its partitions go to the others. */
  leave(id: string): void {
    const member = this.members.get(id)
    if (member === undefined) return
    member.alive = false
    this.members.delete(id)
    this.rebalance()
  }

  /** Eager rebalancing: every term ends, every partition is assigned again, fetched from the committed offset. */
  rebalance(): void {
    this.generation++
    const live = [...this.members.values()].filter((m) => m.alive).sort((a, b) => a.id.localeCompare(b.id))
    for (const m of live) {
      m.membership.endTerm()
      m.assigned = new Set()
      m.position.clear()
      // The new assignment starts unpaused (the hostile reading of kafkajs): a batch of the last
      // term may still be winding down when the partition is fetched again.
      m.paused = new Set()
    }
    this.logs.forEach((_, p) => {
      const owner = live[p % Math.max(1, live.length)]
      if (owner === undefined) return
      owner.assigned.add(p)
      owner.position.set(p, this.committed.get(p) ?? 0)
    })
  }

  /** What the member may fetch now: assigned, not paused, nothing in flight for it, and messages past its position. */
  fetchable(member: FakeMember): ReadonlyArray<number> {
    return [...member.assigned].filter(
      (p) => !member.paused.has(p) && !member.inFetch.has(p) && (member.position.get(p) ?? 0) < this.logs[p]!.length,
    )
  }

  /** One partition's batch for the member, as kafkajs hands it to eachBatch. */
  batchFor(member: FakeMember, partition: number, maxMessages: number, isRunning: () => boolean): PartitionBatch {
    const from = member.position.get(partition) ?? 0
    const messages = this.logs[partition]!.slice(from, from + maxMessages)
    const generation = this.generation
    const owns = () => member.alive && this.members.get(member.id) === member && member.assigned.has(partition)
    return {
      batch: { topic: SIM_TOPIC, partition, messages },
      heartbeat: async () => {
        if (generation !== this.generation) throw Object.assign(new Error("rebalance in progress"), { type: "REBALANCE_IN_PROGRESS" })
      },
      commitOffsetsIfNecessary: async (offsets) => {
        for (const t of offsets.topics) {
          for (const p of t.partitions) {
            // kafkajs commits with the member's current generation: refused only when the partition is no longer its.
            if (!owns() || p.partition !== partition) {
              throw Object.assign(new Error("illegal generation"), { type: "ILLEGAL_GENERATION" })
            }
            const next = Number(p.offset)
            this.commits.push({ member: member.id, partition, next, batchGeneration: generation, generation: this.generation })
            if (generation !== this.generation) {
              this.violations.push(
                `commit after a revoke: ${member.id} committed partition ${partition} to ${next} from a batch of generation ${generation} (now ${this.generation})`,
              )
            }
            if (next < (this.committed.get(partition) ?? 0)) {
              this.violations.push(`commit went backwards on partition ${partition}: ${this.committed.get(partition)} -> ${next}`)
            }
            this.committed.set(partition, next)
          }
        }
      },
      resolveOffset: (offset) => {
        if (generation === this.generation && member.assigned.has(partition)) member.position.set(partition, Number(offset) + 1)
      },
      pause: () => {
        member.paused.add(partition)
        return () => {
          member.paused.delete(partition)
        }
      },
      isRunning,
      isStale: () => generation !== this.generation || !member.assigned.has(partition),
    }
  }
}
