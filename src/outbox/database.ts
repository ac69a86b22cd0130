import { PgClient } from "@effect/sql-pg"
import { Layer, Redacted } from "effect"
import { RelayConfig } from "../config/config.ts"

/**
 * The URL's host and port, given again on their own: the client's `postgres` spans take
 * server.address and server.port only from these (else they say localhost:5432), and
 * the same values change nothing about where it connects.
 */
const addressOf = (url: Redacted.Redacted<string>): { host?: string; port?: number } => {
  const parsed = new URL(Redacted.value(url))
  if (parsed.hostname === "" || parsed.searchParams.has("host")) return {}
  return { host: parsed.hostname.replace(/^\[(.*)\]$/, "$1"), port: parsed.port === "" ? 5432 : Number(parsed.port) }
}

export const pgClientLayer = (
  url: Redacted.Redacted<string>,
  maxConnections: number,
  startupParameters: Readonly<Record<string, string>> = {},
) =>
  PgClient.layer({
    url,
    ...addressOf(url),
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
 *
 * jit=off: the claim is a prepared statement, and once PostgreSQL switches it to a generic
 * plan its cost estimate grows with the table (with 1M SENT rows it passes jit_above_cost
 * and the inlining/optimising thresholds), so every claim paid for an LLVM compilation
 * longer than the query itself: a drain with 1M rows of history ran 30 % slower than on an
 * empty table. The relay's statements are short index walks that JIT never speeds up.
 */
export const DatabaseLive = Layer.unwrap(
  RelayConfig.useSync((c) => pgClientLayer(c.databaseUrl, c.dbPoolSize, { synchronous_commit: "off", jit: "off" })),
)
