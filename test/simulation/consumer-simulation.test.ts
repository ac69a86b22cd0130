/**
 * The consumer's batch core (processPartitionBatch, handOffBatch, GroupMembership: the real
 * code) in a group of members over the fake group, under TestClock, one seeded schedule of
 * joins, leaves, kills, outages, failing and stuck handlers and late duplicates per seed. A
 * failure prints its seed; `CONSUMER_SIM_SEED=<n> npx vitest run test/simulation/consumer-simulation.test.ts`
 * replays that one run exactly, and `CONSUMER_SIM_SEEDS=50000` is the long mode.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { checkConsumerInvariants } from "../support/consumer-simulation/invariants.ts"
import { simulate } from "../support/consumer-simulation/world.ts"

const single = process.env.CONSUMER_SIM_SEED === undefined ? undefined : Number(process.env.CONSUMER_SIM_SEED)
const count = Number(process.env.CONSUMER_SIM_SEEDS ?? 2_000)
const firstSeed = Number(process.env.CONSUMER_SIM_FIRST_SEED ?? 1)

describe("consumer simulation", () => {
  it.effect(
    single === undefined ? `holds every invariant over ${count} group schedules` : `holds every invariant for seed ${single}`,
    () =>
      Effect.gen(function* () {
        const seeds = single === undefined ? Array.from({ length: count }, (_, i) => firstSeed + i) : [single]
        const failures: Array<string> = []
        const totals = { applied: 0, deadLettered: 0, commits: 0, rebalances: 0, stuck: 0 }
        for (const seed of seeds) {
          const result = yield* simulate(seed)
          totals.applied += result.applied.length
          totals.deadLettered += result.deadLettered.length
          totals.commits += result.group.commits.length
          totals.rebalances += result.group.generation
          totals.stuck += result.scenario.stuck === undefined ? 0 : 1
          const violations = checkConsumerInvariants(result)
          if (violations.length > 0) {
            failures.push(
              `seed ${seed} (replay: CONSUMER_SIM_SEED=${seed} npx vitest run test/simulation/consumer-simulation.test.ts): ${violations.length} violation(s)\n` +
                violations
                  .slice(0, 5)
                  .map((v) => `  - ${v.invariant}: ${v.detail}`)
                  .join("\n") +
                `\n  scenario: ${JSON.stringify({ ...result.scenario, poison: [...result.scenario.poison], flaky: [...result.scenario.flaky] })}`,
            )
            if (failures.length >= 5) break
          }
        }
        if (single === undefined) yield* Effect.logInfo(`consumer simulation: ${seeds.length} schedules, ${JSON.stringify(totals)}`)
        expect(failures, failures.join("\n\n")).toEqual([])
      }),
    { timeout: Math.max(300_000, (single === undefined ? count : 1) * 100) },
  )
})
