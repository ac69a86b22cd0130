/**
 * The relay's coordination under thousands of fault schedules: real relay code over the fake
 * store and broker (which pass the same contract suite as PostgreSQL), TestClock time, one
 * seeded schedule per seed, a step checker told of every statement and acknowledgement as it
 * lands. A failure prints its seed; `SIM_SEED=<n> npm test -- simulation` replays that one
 * run exactly. The seeds are spread over worker threads, one per core. For a long run by hand,
 * `node test/support/simulation/run-seeds.ts --seeds 50000` (one thread, no test timeout).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { describeFailure, runSeed, runSeedsInWorkers } from "../support/simulation/seed-runs.ts"

const single = process.env.SIM_SEED === undefined ? undefined : Number(process.env.SIM_SEED)
const count = Number(process.env.SIM_SEEDS ?? 2_000)
const firstSeed = Number(process.env.SIM_FIRST_SEED ?? 1)

describe("relay simulation", () => {
  if (single !== undefined) {
    it.effect(`holds every invariant for seed ${single}`, () =>
      Effect.gen(function* () {
        const run = yield* Effect.promise(() => runSeed(single))
        expect(run.violations.length === 0 ? [] : [describeFailure(single, run)]).toEqual([])
      }),
    )
    return
  }
  it.effect(
    `holds every invariant over ${count} fault schedules`,
    () =>
      Effect.gen(function* () {
        const report = yield* Effect.promise(() => runSeedsInWorkers(firstSeed, count))
        yield* Effect.logInfo(
          `simulated ${report.seeds} schedules: ${report.events} events, ${report.dead} dead, ${report.extraDeliveries} extra deliveries`,
        )
        expect(report.failures, report.failures.join("\n\n")).toEqual([])
        expect(report.seeds).toBe(count)
      }),
    // About 20 ms a seed on one quiet core; the room is for a loaded machine.
    { timeout: Math.max(600_000, count * 100) },
  )
})
