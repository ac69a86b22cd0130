/**
 * What the consumer's core uses of a kafkajs consumer group, per partition batch: the
 * messages, the heartbeat, the offset commit, resolving an offset, pausing and resuming the
 * partition, and whether the batch is still the group's (running, not stale). kafkajs'
 * `EachBatchPayload` is one implementation; the simulation's fake group
 * (test/support/consumer-simulation) is another, and both pass the same contract suite.
 * Rebalances reach the core through GroupMembership (group-membership.ts).
 */
import type { KafkaMessage } from "kafkajs"

export interface PartitionBatch {
  readonly batch: {
    readonly topic: string
    readonly partition: number
    readonly messages: ReadonlyArray<KafkaMessage>
  }
  /** Fails when the member lost its membership (the group is rebalancing). */
  readonly heartbeat: () => Promise<void>
  /** Commits the given next offsets (each is the first offset not yet done). */
  readonly commitOffsetsIfNecessary: (offsets: {
    readonly topics: Array<{ readonly topic: string; readonly partitions: Array<{ readonly partition: number; readonly offset: string }> }>
  }) => Promise<void>
  /** The partition is fetched again after this offset once it is resumed. */
  readonly resolveOffset: (offset: string) => void
  /** Stops fetching this partition; the returned function resumes it. */
  readonly pause: () => () => void
  readonly isRunning: () => boolean
  /** True once the batch's fetch no longer stands (a rebalance or a seek since). */
  readonly isStale: () => boolean
}
