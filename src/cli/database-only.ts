/** Layers for commands that need only DATABASE_URL (migrate, dlq, replay): they must work while Kafka is down. */
import { Effect, Layer, Result } from "effect"
import { InvalidConfig, settings } from "../config/config.ts"
import { pgClientLayer } from "../outbox/database.ts"

export const databaseOnlyLayer = Layer.unwrap(
  Effect.suspend(() => {
    const url = settings.databaseUrl.read(process.env.DATABASE_URL)
    return Result.isSuccess(url)
      ? Effect.succeed(pgClientLayer(url.success, 2))
      : Effect.fail(new InvalidConfig({ problems: [{ variable: "DATABASE_URL", message: url.failure }] }))
  }),
)
