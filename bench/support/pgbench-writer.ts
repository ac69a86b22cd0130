/**
 * The steady-rate writer as a C client: `pgbench --rate` with an INSERT of PER_TX rows per
 * transaction. The Node writer (bench/writer.ts) spent ~35 % of a core at 500 transactions/s
 * and fell behind schedule from ~5 000 events/s on this 2-core machine, so the steady figures
 * measured the writer, not the relay; pgbench does the same inserts for a fraction of that.
 * Each row carries the time of its INSERT (clock_timestamp(), just before COMMIT) in the
 * `bench_written_at` header; the consumer's receipt time minus that is the latency, which
 * overstates commit → consumer by the commit itself (a WAL flush, well under a millisecond).
 * pgbench schedules transactions as a Poisson process at the given mean rate.
 */
import { execFile, execFileSync } from "node:child_process"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect } from "effect"
import { PAYLOAD } from "./seed.ts"

export const STAMP_HEADER = "bench_written_at"

export const pgbenchAvailable = (): boolean => {
  try {
    execFileSync("pgbench", ["--version"], { stdio: "ignore" })
    return true
  } catch {
    return false
  }
}

export interface PgbenchReport {
  readonly transactions: number
  /** Mean and worst delay of a transaction behind its schedule. */
  readonly lagAvgMs: number
  readonly lagMaxMs: number
}

const script = (perTx: number) => `\\set k random(0, 999)
INSERT INTO outbox_event (dedup_key, event_type, aggregate_key, payload, headers, request_id)
SELECT 'steady-' || gen_random_uuid(), 'search_click', 'key-' || ((:k + g) % 1000), '${JSON.stringify(PAYLOAD)}'::jsonb,
       jsonb_build_object('${STAMP_HEADER}', (extract(epoch FROM clock_timestamp()) * 1000)::bigint::text), 'req-steady'
  FROM generate_series(1, ${perTx}) AS g;
`

export const runPgbenchWriter = (databaseUrl: string, o: { readonly rate: number; readonly perTx: number; readonly seconds: number }) =>
  Effect.callback<PgbenchReport, Error>((resume) => {
    const dir = mkdtempSync(join(tmpdir(), "outbox-bench-"))
    const file = join(dir, "insert.sql")
    writeFileSync(file, script(o.perTx))
    const transactionsPerSecond = o.rate / o.perTx
    // Enough clients that a commit waiting on the WAL flush (or NOTIFY's commit lock) does not hold the schedule back.
    const clients = String(Math.min(32, Math.max(4, Math.ceil(transactionsPerSecond / 200))))
    execFile(
      "pgbench",
      [
        "--no-vacuum",
        "--client",
        clients,
        "--jobs",
        "1",
        "--rate",
        String(transactionsPerSecond),
        "--time",
        String(o.seconds),
        "--file",
        file,
        databaseUrl,
      ],
      { maxBuffer: 1 << 24 },
      (error, stdout, stderr) => {
        rmSync(dir, { recursive: true, force: true })
        if (error) return resume(Effect.fail(new Error(`pgbench failed: ${stderr || error.message}`)))
        const transactions = Number(/number of transactions actually processed: (\d+)/.exec(stdout)?.[1] ?? Number.NaN)
        const lag = /rate limit schedule lag: avg ([\d.]+) \(max ([\d.]+)\) ms/.exec(stdout)
        resume(Effect.succeed({ transactions, lagAvgMs: Number(lag?.[1] ?? Number.NaN), lagMaxMs: Number(lag?.[2] ?? Number.NaN) }))
      },
    )
  })
