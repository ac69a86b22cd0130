import { PgClient } from "@effect/sql-pg"
import { Layer, type Redacted } from "effect"
import { RelayConfig } from "../config/config.ts"

export const pgClientLayer = (
  url: Redacted.Redacted<string>,
  maxConnections: number,
  startupParameters: Readonly<Record<string, string>> = {},
) =>
  PgClient.layer({
    url,
    maxConnections,
    applicationName: "outbox-relay",
    connectTimeout: "5 seconds",
    keepAlive: "30 seconds",
    startupParameters,
  })

/**
 * The relay's connection pool. Its commits do not wait for the WAL flush
 * (synchronous_commit=off): if PostgreSQL crashes, the last few claims or marks may be
 * lost, which at worst returns rows to the queue to be published again — a duplicate,
 * which at-least-once delivery allows — and never marks an unsent row SENT, because a
 * mark is only written after Kafka acknowledged. Services' own inserts keep their setting.
 */
export const DatabaseLive = Layer.unwrap(
  RelayConfig.useSync((c) => pgClientLayer(c.databaseUrl, c.dbPoolSize, { synchronous_commit: "off" })),
)
