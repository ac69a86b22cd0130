/** One worker thread's share of a simulation run (see seed-runs.ts). */
import { parentPort, workerData } from "node:worker_threads"
import { runSeedRange } from "./seed-runs.ts"

const range = workerData as { readonly first: number; readonly count: number; readonly maxFailures: number }
parentPort?.postMessage(await runSeedRange(range.first, range.count, range.maxFailures))
