/**
 * A long steady write with retention on: the table and its indexes should grow for about
 * RETENTION plus one retention pass, then level off, not grow for as long as the run lasts.
 */
import { Effect, Fiber } from "effect"
import { SqlClient } from "effect/sql"
import { type BenchEnv, sqlLayer } from "../support/bench-env.ts"
import { startRelay } from "../support/relay-process.ts"
import { runWriter } from "../support/writer-process.ts"
import { relayEnv } from "./drain.ts"

export interface SoakSample {
  readonly atSeconds: number
  readonly rows: number
  readonly tableMb: number
  readonly indexesMb: number
}

const sample = (startedAt: number) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const [row] = yield* sql<{ rows: number; table_bytes: number; index_bytes: number }>`
      SELECT (SELECT count(*) FROM outbox_event)::int AS rows,
             pg_table_size('outbox_event')::float8 AS table_bytes,
             pg_indexes_size('outbox_event')::float8 AS index_bytes`
    return {
      atSeconds: Math.round((Date.now() - startedAt) / 1000),
      rows: row!.rows,
      tableMb: row!.table_bytes / 2 ** 20,
      indexesMb: row!.index_bytes / 2 ** 20,
    } satisfies SoakSample
  })

export const soak = (env: BenchEnv, o: { minutes: number; rate: number; retention: string }) =>
  Effect.gen(function* () {
    yield* startRelay(relayEnv(env, { RETENTION: o.retention }))
    const startedAt = Date.now()
    const writer = yield* Effect.forkChild(
      runWriter(env.databaseUrl, { rate: o.rate, perTx: 10, seconds: o.minutes * 60, keepTimes: false }),
    )
    const samples: Array<SoakSample> = []
    while (Date.now() - startedAt < o.minutes * 60_000) {
      yield* Effect.sleep("30 seconds")
      samples.push(yield* sample(startedAt))
      process.stderr.write(`bench: soak ${JSON.stringify(samples.at(-1))}\n`)
    }
    yield* Fiber.join(writer)
    const secondHalf = samples.slice(Math.floor(samples.length / 2))
    const peak = Math.max(...samples.map((s) => s.tableMb + s.indexesMb))
    const last = samples.at(-1)!
    return {
      ...o,
      samples,
      peakMb: peak,
      lastMb: last.tableMb + last.indexesMb,
      secondHalfGrowthMb: last.tableMb + last.indexesMb - (secondHalf[0]!.tableMb + secondHalf[0]!.indexesMb),
    }
  }).pipe(Effect.scoped, Effect.provide(sqlLayer(env.databaseUrl, 1)))
