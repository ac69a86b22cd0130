import { PgClient } from "@effect/sql-pg"
import { Layer, type Redacted } from "effect"
import { RelayConfig } from "../config/config.ts"

export const pgClientLayer = (url: Redacted.Redacted<string>, maxConnections: number) =>
  PgClient.layer({
    url,
    maxConnections,
    applicationName: "outbox-relay",
    connectTimeout: "5 seconds",
    keepAlive: "30 seconds",
  })

/** The relay's connection pool, sized from configuration. */
export const DatabaseLive = Layer.unwrap(RelayConfig.useSync((c) => pgClientLayer(c.databaseUrl, c.dbPoolSize)))
