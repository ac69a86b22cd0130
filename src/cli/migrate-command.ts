import { Console, Effect } from "effect"
import { Command } from "effect/cli"
import { migrate } from "../outbox/schema-migrator.ts"
import { reportFailures } from "./cli-failure.ts"
import { databaseOnlyLayer } from "./database-only.ts"

export const migrateCommand = Command.make("migrate", {}, () =>
  reportFailures(
    Effect.gen(function* () {
      const report = yield* migrate()
      yield* Console.log(
        report.applied.length === 0
          ? `Schema is up to date (version ${report.to}).`
          : `Migrated schema from version ${report.from} to ${report.to}: ${report.applied.join(", ")}`,
      )
    }).pipe(Effect.provide(databaseOnlyLayer)),
  ),
).pipe(Command.withDescription("Apply the outbox schema migrations (safe to run again). Reads DATABASE_URL."))
