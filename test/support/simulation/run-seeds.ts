/**
 * The simulation outside vitest, for long runs by hand (no test timeout):
 * `nice node test/support/simulation/run-seeds.ts --seeds 50000 [--first 1] [--workers 1]`.
 * Runs in blocks of 1,000 seeds, printing each block's result and every failing seed with its
 * first violations; exits 1 if any seed failed. `SIM_SEED=<n> npm test -- simulation` replays one.
 */
import { parseArgs } from "node:util"
import { runSeedsInWorkers } from "./seed-runs.ts"

const { values } = parseArgs({
  options: {
    seeds: { type: "string", default: "2000" },
    first: { type: "string", default: "1" },
    workers: { type: "string", default: "1" },
  },
})
const count = Number(values.seeds)
const first = Number(values.first)
const workers = Number(values.workers)
const startedAt = performance.now()
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
