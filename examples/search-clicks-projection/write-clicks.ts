/**
 * Writes sample search_click events into the outbox with the writer, each in a
 * transaction, so the relay and this projection have something to move.
 *
 *   OUTBOX_DATABASE_URL=postgres://… CLICKS=100 node examples/search-clicks-projection/write-clicks.ts
 */
import { randomUUID } from "node:crypto"
import { NodeRuntime } from "@effect/platform-node"
import { PgClient } from "@effect/sql-pg"
import { Config, Console, Effect } from "effect"
import { SqlClient } from "effect/sql"
import { makeOutboxWriter } from "../../src/writer.ts"
import { SearchClick } from "./projection.ts"

const QUERIES = ["running shoes", "trail shoes", "socks", "rain jacket", "tent"]
const writer = makeOutboxWriter({ search_click: SearchClick })

const program = Effect.gen(function* () {
  const clicks = yield* Config.Int("CLICKS").pipe(Config.withDefault(20))
  const sql = yield* SqlClient.SqlClient
  const run = randomUUID().slice(0, 8)
  const results = yield* sql.withTransaction(
    writer.writeAll(
      Array.from({ length: clicks }, (_, i) => {
        const query = QUERIES[i % QUERIES.length]!
        return {
          eventType: "search_click" as const,
          dedupKey: `sample-${run}-${i}`,
          aggregateKey: query,
          payload: { query, resultId: `result-${i}`, position: i % 10 },
        }
      }),
    ),
  )
  yield* Console.log(`wrote ${results.filter((r) => r._tag === "Inserted").length} search_click events (run ${run})`)
})

NodeRuntime.runMain(program.pipe(Effect.provide(PgClient.layerConfig({ url: Config.Redacted("OUTBOX_DATABASE_URL") }))))
