import { Console, Effect, Layer, Result } from "effect"
import { Command } from "effect/cli"
import { InvalidConfig, settings } from "../config/config.ts"
import { pgClientLayer } from "../outbox/database.ts"
import { migrate } from "../outbox/schema-migrator.ts"
import { reportFailures } from "./cli-failure.ts"

/** `migrate` needs only DATABASE_URL: it must work before Kafka is configured at all. */
const databaseLayer = Layer.unwrap(
  Effect.suspend(() => {
    const url = settings.databaseUrl.read(process.env.DATABASE_URL)
    return Result.isSuccess(url)
      ? Effect.succeed(pgClientLayer(url.success, 2))
      : Effect.fail(new InvalidConfig({ problems: [{ variable: "DATABASE_URL", message: url.failure }] }))
  }),
)

export const migrateCommand = Command.make("migrate", {}, () =>
  reportFailures(
    Effect.gen(function* () {
      const report = yield* migrate()
      yield* Console.log(
        report.applied.length === 0
          ? `Schema is up to date (version ${report.to}).`
          : `Migrated schema from version ${report.from} to ${report.to}: ${report.applied.join(", ")}`,
      )
    }).pipe(Effect.provide(databaseLayer)),
  ),
).pipe(Command.withDescription("Apply the outbox schema migrations (safe to run again). Reads DATABASE_URL."))
