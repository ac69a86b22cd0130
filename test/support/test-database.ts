/** A fresh database per test file, on the server the test run was given, dropped afterwards. */
import { randomBytes } from "node:crypto"
import { PgClient } from "@effect/sql-pg"
import { Effect, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import { inject } from "vitest"
import { migrate } from "../../src/outbox/schema-migrator.ts"

const withAdmin = <A, E>(f: (sql: SqlClient.SqlClient) => Effect.Effect<A, E>) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    return yield* f(sql)
  }).pipe(Effect.provide(PgClient.layer({ url: Redacted.make(inject("databaseUrl")), maxConnections: 1 })))

export const databaseUrlFor = (name: string): string => {
  const url = new URL(inject("databaseUrl"))
  url.pathname = `/${name}`
  return url.toString()
}

/** Creates an empty database and gives its URL; with `migrated`, the outbox schema is applied. */
export const testDatabase = (options: { readonly migrated: boolean } = { migrated: true }) =>
  Effect.acquireRelease(
    Effect.gen(function* () {
      const name = `outbox_test_${randomBytes(5).toString("hex")}`
      yield* withAdmin((sql) => sql.unsafe(`CREATE DATABASE ${name}`))
      const url = databaseUrlFor(name)
      if (options.migrated) {
        yield* migrate().pipe(Effect.provide(PgClient.layer({ url: Redacted.make(url), maxConnections: 1 })))
      }
      return { name, url }
    }).pipe(Effect.orDie),
    ({ name }) => withAdmin((sql) => sql.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)).pipe(Effect.ignore),
  )

/** A client on a test database, for seeding rows and reading them back. */
export const sqlLayer = (url: string) => PgClient.layer({ url: Redacted.make(url), maxConnections: 4 })
