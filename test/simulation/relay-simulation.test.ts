/**
 * The relay's coordination under thousands of fault schedules: real relay code over the fake
 * store and broker (which pass the same contract suite as PostgreSQL), TestClock time, one
 * seeded schedule per seed. A failure prints its seed; `SIM_SEED=<n> npm test -- simulation`
 * replays that one run exactly, and `SIM_SEEDS=100000` is the long mode for a night's run.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { checkInvariants } from "../support/simulation/invariants.ts"
import { simulate } from "../support/simulation/world.ts"

const single = process.env.SIM_SEED === undefined ? undefined : Number(process.env.SIM_SEED)
const count = Number(process.env.SIM_SEEDS ?? 2_000)
const firstSeed = Number(process.env.SIM_FIRST_SEED ?? 1)

describe("relay simulation", () => {
  it.effect(
    single === undefined ? `holds every invariant over ${count} fault schedules` : `holds every invariant for seed ${single}`,
    () =>
      Effect.gen(function* () {
        const seeds = single === undefined ? Array.from({ length: count }, (_, i) => firstSeed + i) : [single]
        const failures: Array<string> = []
        let events = 0
        let dead = 0
        let duplicates = 0
        for (const seed of seeds) {
          const result = yield* simulate(seed)
          events += result.rows.length
          dead += result.rows.filter((r) => r.status === "DEAD").length
          duplicates +=
            result.kafka.log.filter((l) => l.topic !== result.scenario.config.dlqTopic).length -
            result.rows.filter((r) => r.status === "SENT").length
          const violations = checkInvariants(result)
          if (violations.length > 0) {
            failures.push(
              `seed ${seed} (replay: SIM_SEED=${seed} npm test -- simulation): ${violations.length} violation(s)\n` +
                violations
                  .slice(0, 5)
                  .map((v) => `  - ${v.invariant}: ${v.detail}`)
                  .join("\n") +
                `\n  scenario: ${result.scenario.instances} instance(s), batch ${result.scenario.config.batchSize}, max attempts ${result.scenario.config.maxAttempts}, faults ${JSON.stringify(result.scenario.faults)}`,
            )
            if (failures.length >= 5) break
          }
        }
        if (single === undefined) {
          yield* Effect.logInfo(`simulated ${seeds.length} schedules: ${events} events, ${dead} dead, ${duplicates} extra deliveries`)
        }
        expect(failures, failures.join("\n\n")).toEqual([])
      }),
    // The long mode runs for hours: about 15 ms a seed on a quiet machine, with room to spare.
    { timeout: Math.max(600_000, (single === undefined ? count : 1) * 100) },
  )
})
