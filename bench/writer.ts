/**
 * A service writing events at a fixed rate (a separate process, like the real thing):
 * RATE events/s, PER_TX events per transaction, for SECONDS. Prints, as JSON on stdout,
 * each dedup_key with the epoch ms at which its COMMIT returned, and how far behind
 * schedule the writer fell.
 */
import { PgClient } from "@effect/sql-pg"
import { Effect, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import { PAYLOAD } from "./support/seed.ts"

const env = (name: string) => {
  const v = process.env[name]
  if (v === undefined) throw new Error(`${name} is required`)
  return v
}
const rate = Number(env("RATE"))
const perTx = Number(env("PER_TX"))
const seconds = Number(env("SECONDS"))
const transactions = Math.round((rate * seconds) / perTx)
const intervalMs = (1000 * perTx) / rate
// A soak writes for minutes: it needs the load, not every commit time.
const keepTimes = process.env.NO_TIMES === undefined

const program = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  const committed: Array<[string, number]> = []
  let maxBehindMs = 0
  const payload = JSON.stringify(PAYLOAD)
  const start = Date.now() + 200
  yield* Effect.forEach(
    Array.from({ length: transactions }, (_, i) => i),
    (i) =>
      Effect.gen(function* () {
        const due = start + i * intervalMs
        // A writer that cannot keep the rate stops at the deadline: what it wrote is its rate.
        if (Date.now() > start + seconds * 1000) return
        const wait = due - Date.now()
        if (wait > 0) yield* Effect.sleep(wait)
        else maxBehindMs = Math.max(maxBehindMs, -wait)
        const rows = Array.from({ length: perTx }, (_, j) => {
          const n = i * perTx + j
          return { dedup_key: `steady-${n}`, event_type: "search_click", aggregate_key: `key-${n % 1000}`, request_id: `req-${n}` }
        })
        yield* sql`
          INSERT INTO outbox_event (dedup_key, event_type, aggregate_key, payload, request_id)
          SELECT dedup_key, event_type, aggregate_key, ${payload}::jsonb, request_id
            FROM jsonb_to_recordset(${JSON.stringify(rows)}::jsonb) AS e(dedup_key text, event_type text, aggregate_key text, request_id text)`
        const at = Date.now()
        if (!keepTimes) return
        for (const r of rows) committed.push([r.dedup_key, at])
      }),
    // Enough connections in flight to hold the schedule; the pool bounds it.
    { concurrency: 32, discard: true },
  )
  process.stdout.write(JSON.stringify({ committed, maxBehindMs, elapsedMs: Date.now() - start }))
}).pipe(Effect.provide(PgClient.layer({ url: Redacted.make(env("DATABASE_URL")), maxConnections: 16 })))

await Effect.runPromise(program)
