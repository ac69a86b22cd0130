/**
 * Versioned migrations with our own version table, so the relay can tell an
 * unmigrated schema from a newer one and say which command fixes it.
 */
import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import { SchemaVersionMismatch } from "../domain/errors.ts"
import { LATEST_SCHEMA_VERSION, migrations } from "./migrations/index.ts"
import { toDatabaseError } from "./sql-error.ts"

// Any constant works; it only has to be the same for every instance running `migrate`.
const MIGRATION_LOCK_KEY = 7_114_206_001

const currentVersion = Effect.fnUntraced(function* () {
  const sql = yield* SqlClient.SqlClient
  const [exists] = yield* sql<{ present: boolean }>`SELECT to_regclass('outbox_relay_schema') IS NOT NULL AS present`
  if (exists?.present !== true) return 0
  const [row] = yield* sql<{ version: number | null }>`SELECT max(version)::int AS version FROM outbox_relay_schema`
  return row?.version ?? 0
})

export interface MigrationReport {
  readonly from: number
  readonly to: number
  readonly applied: ReadonlyArray<string>
}

/** Applies what is missing in one transaction (all or nothing); safe to run again and concurrently. */
export const migrate = Effect.fn("SchemaMigrator.migrate")(
  function* () {
    const sql = yield* SqlClient.SqlClient
    return yield* sql.withTransaction(
      Effect.gen(function* () {
        // A transaction-level advisory lock serialises concurrent `migrate` runs.
        yield* sql`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK_KEY})`
        yield* sql`CREATE TABLE IF NOT EXISTS outbox_relay_schema (
          version integer PRIMARY KEY,
          name text NOT NULL,
          applied_at timestamptz NOT NULL DEFAULT now()
        )`
        const from = yield* currentVersion()
        if (from > LATEST_SCHEMA_VERSION) {
          return yield* new SchemaVersionMismatch({ found: from, expected: LATEST_SCHEMA_VERSION })
        }
        const applied: Array<string> = []
        for (const m of migrations.filter((m) => m.version > from)) {
          // The extended protocol takes one statement at a time.
          for (const statement of m.statements) yield* sql.unsafe(statement)
          yield* sql`INSERT INTO outbox_relay_schema (version, name) VALUES (${m.version}, ${m.name})`
          applied.push(`${String(m.version).padStart(4, "0")}_${m.name}`)
        }
        return { from, to: LATEST_SCHEMA_VERSION, applied } satisfies MigrationReport
      }),
    )
  },
  Effect.catchTag("SqlError", (e) => Effect.fail(toDatabaseError("migrate")(e))),
)

/** The relay refuses to run against a schema it does not understand. */
export const requireCurrentSchema = Effect.fn("SchemaMigrator.requireCurrentSchema")(
  function* () {
    const found = yield* currentVersion()
    if (found !== LATEST_SCHEMA_VERSION) {
      return yield* new SchemaVersionMismatch({ found, expected: LATEST_SCHEMA_VERSION })
    }
  },
  Effect.catchTag("SqlError", (e) => Effect.fail(toDatabaseError("schema check")(e))),
)
