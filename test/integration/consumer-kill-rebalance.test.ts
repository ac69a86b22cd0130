/**
 * The consumer group as real processes, SIGKILLed and restarted mid-stream while members
 * join and leave: every click is applied exactly once, read back from the application log
 * the handler writes in the inbox transaction. A short run; the long one is
 * `npx node test/support/consumer-soak.ts` (figures in docs/consumer-idempotency.md).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { inject } from "vitest"
import { runKillRebalance } from "../support/consumer-soak.ts"

describe("idempotent consumer group under SIGKILL and rebalances", () => {
  it.live(
    "members SIGKILLed and restarted mid-stream, others joining and leaving: every click applied once, none twice, none lost",
    () =>
      Effect.gen(function* () {
        const figures = yield* Effect.promise(() =>
          runKillRebalance({
            databaseUrl: inject("databaseUrl"),
            brokers: inject("kafkaBrokers").split(","),
            clicks: 1500,
            seconds: 12,
            members: 3,
            partitions: 6,
            copyRate: 0.05,
            killEveryMs: 3000,
            drainTimeoutMs: 25_000,
          }),
        )
        console.log(`[kill/rebalance] ${JSON.stringify(figures)}`)
        expect(figures.sigkills).toBeGreaterThanOrEqual(3)
        expect(figures.copiesOnKafka).toBeGreaterThan(0)
        expect(figures).toMatchObject({ appliedOnce: 1500, duplicatesApplied: 0, lost: 0, deadLettered: 0, fullyCommitted: true })
      }),
    90_000,
  )
})
