/**
 * The simulation outside vitest, for long runs by hand (one process, no test timeout):
 * `node test/support/simulation/run-seeds.ts --seeds 50000 [--first 1]`. Prints each failing
 * seed with its first violations, a progress line every 1,000 seeds, and a summary; exits 1
 * if any seed failed. `SIM_SEED=<n> npm test -- simulation` replays one.
 */
import { parseArgs } from "node:util"
import { Effect } from "effect"
import { checkInvariants } from "./invariants.ts"
import { simulate } from "./world.ts"

const { values } = parseArgs({ options: { seeds: { type: "string", default: "2000" }, first: { type: "string", default: "1" } } })
const count = Number(values.seeds)
const first = Number(values.first)
const startedAt = performance.now()
let failed = 0
let events = 0
for (let seed = first; seed < first + count; seed++) {
  const result = await Effect.runPromise(simulate(seed))
  events += result.rows.length
  const violations = checkInvariants(result)
  if (violations.length > 0) {
    failed++
    process.stdout.write(
      `seed ${seed}: ${violations.length} violation(s)\n${violations
        .slice(0, 3)
        .map((v) => `  - ${v.invariant}: ${v.detail}\n`)
        .join("")}`,
    )
  }
  if ((seed - first + 1) % 1000 === 0) {
    process.stdout.write(`… ${seed - first + 1} seeds, ${failed} failed, ${((performance.now() - startedAt) / 1000).toFixed(0)} s\n`)
  }
}
process.stdout.write(
  `${count} seeds from ${first}: ${failed} failed, ${events} events, ${((performance.now() - startedAt) / 1000).toFixed(1)} s\n`,
)
process.exitCode = failed > 0 ? 1 : 0
