/**
 * Runs ranges of seeds and reports what broke, in this thread or spread over worker threads
 * (each with its own Effect runtime: a seed shares nothing with another, so the seeds of a
 * CI run split across the machine's cores).
 */
import { availableParallelism } from "node:os"
import { Worker } from "node:worker_threads"
import { Effect } from "effect"
import { checkInvariants } from "./invariants.ts"
import { simulate } from "./world.ts"

export interface SeedReport {
  readonly seeds: number
  /** One entry per failing seed (at most `maxFailures`), with its replay command and first violations. */
  readonly failures: ReadonlyArray<string>
  readonly events: number
  readonly dead: number
  /** Deliveries to event topics beyond one per SENT row. */
  readonly extraDeliveries: number
}

export const describeFailure = (seed: number, result: Awaited<ReturnType<typeof runSeed>>) =>
  `seed ${seed} (replay: SIM_SEED=${seed} npm test -- simulation): ${result.violations.length} violation(s)\n` +
  result.violations
    .slice(0, 5)
    .map((v) => `  - ${v.invariant}: ${v.detail}`)
    .join("\n") +
  `\n  scenario: ${result.result.scenario.instances} instance(s), batch ${result.result.scenario.config.batchSize}, max attempts ${result.result.scenario.config.maxAttempts}, broker ${result.result.scenario.broker._tag}, faults ${JSON.stringify(result.result.scenario.faults)}`

export const runSeed = async (seed: number) => {
  const result = await Effect.runPromise(simulate(seed))
  return { result, violations: checkInvariants(result) }
}

export const runSeedRange = async (first: number, count: number, maxFailures = 5): Promise<SeedReport> => {
  const failures: Array<string> = []
  let events = 0
  let dead = 0
  let extraDeliveries = 0
  let seeds = 0
  for (let seed = first; seed < first + count && failures.length < maxFailures; seed++) {
    const run = await runSeed(seed)
    const { result } = run
    seeds++
    events += result.rows.length
    dead += result.rows.filter((r) => r.status === "DEAD").length
    extraDeliveries +=
      result.kafka.log.filter((l) => l.topic !== result.scenario.config.dlqTopic).length -
      result.rows.filter((r) => r.status === "SENT").length
    if (run.violations.length > 0) failures.push(describeFailure(seed, run))
  }
  return { seeds, failures, events, dead, extraDeliveries }
}

/** The seeds split into one contiguous range per worker thread; the reports summed. */
export const runSeedsInWorkers = async (
  first: number,
  count: number,
  workers = availableParallelism(),
  maxFailures = 5,
): Promise<SeedReport> => {
  const n = Math.max(1, Math.min(workers, Math.ceil(count / 100)))
  const size = Math.ceil(count / n)
  const ranges = Array.from({ length: n }, (_, i) => ({ first: first + i * size, count: Math.min(size, count - i * size) })).filter(
    (r) => r.count > 0,
  )
  const reports = await Promise.all(
    ranges.map(
      (range) =>
        new Promise<SeedReport>((resolve, reject) => {
          const worker = new Worker(new URL("./seed-worker.ts", import.meta.url), { workerData: { ...range, maxFailures } })
          worker.once("message", resolve)
          worker.once("error", reject)
          worker.once("exit", (code) => (code === 0 ? undefined : reject(new Error(`seed worker exited with ${code}`))))
        }),
    ),
  )
  return reports.reduce((a, b) => ({
    seeds: a.seeds + b.seeds,
    failures: [...a.failures, ...b.failures],
    events: a.events + b.events,
    dead: a.dead + b.dead,
    extraDeliveries: a.extraDeliveries + b.extraDeliveries,
  }))
}
