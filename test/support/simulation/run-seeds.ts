/**
 * The simulation outside vitest, for long runs by hand (no test timeout):
 * `nice node test/support/simulation/run-seeds.ts --seeds 50000 [--first 1] [--workers 1]`.
 * Runs in blocks of 1,000 seeds, printing each block's result and every failing seed with its
 * first violations; exits 1 if any seed failed. `SIM_SEED=<n> npm test -- simulation` replays one.
 */
import { parseArgs } from "node:util"
import { describeFailure, runSeed, runSeedsInWorkers } from "./seed-runs.ts"

const { values } = parseArgs({
  options: {
    seeds: { type: "string", default: "2000" },
    first: { type: "string", default: "1" },
    workers: { type: "string", default: "1" },
    "stop-at-first": { type: "boolean", default: false },
  },
})
const count = Number(values.seeds)
const first = Number(values.first)
const workers = Number(values.workers)
const startedAt = performance.now()
if (values["stop-at-first"]) {
  // In order, in this thread: the first failing seed is the lowest one (a mutation study's "caught at").
  for (let seed = first; seed < first + count; seed++) {
    const run = await runSeed(seed)
    if (run.violations.length > 0) {
      process.stdout.write(`first failing seed ${seed} after ${seed - first + 1} seeds\n${describeFailure(seed, run)}\n`)
      process.exit(1)
    }
  }
  process.stdout.write(`no failing seed in ${count} seeds from ${first}\n`)
  process.exit(0)
}
const elapsed = () => `${((performance.now() - startedAt) / 1000).toFixed(1)} s`
let failed = 0
let events = 0
for (let from = first; from < first + count; from += 1000) {
  const report = await runSeedsInWorkers(from, Math.min(1000, first + count - from), workers, Number.POSITIVE_INFINITY)
  failed += report.failures.length
  events += report.events
  for (const failure of report.failures) process.stdout.write(`${failure}\n`)
  process.stdout.write(`seeds ${from}–${from + report.seeds - 1}: ${report.failures.length} failed (${elapsed()})\n`)
}
process.stdout.write(`${count} seeds from ${first}: ${failed} failed, ${events} events, ${elapsed()}\n`)
process.exitCode = failed > 0 ? 1 : 0
