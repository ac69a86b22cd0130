/** Where the benchmark runs: the local infrastructure (started when not up), a fresh database, fresh topics. */
import { execFileSync } from "node:child_process"
import { randomBytes } from "node:crypto"
import { fileURLToPath } from "node:url"
import { PgClient } from "@effect/sql-pg"
import { Effect, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import { DEFAULT_EVENT_TYPES } from "../../src/domain/event-types.ts"
import { ensureTopics } from "../../src/kafka/topics.ts"
import { migrate } from "../../src/outbox/schema-migrator.ts"

const INFRA = fileURLToPath(new URL("../../scripts/infra.sh", import.meta.url))

export interface BenchEnv {
  readonly databaseUrl: string
  readonly adminUrl: string
  readonly brokers: string
  readonly topicMap: Readonly<Record<string, string>>
  readonly dlqTopic: string
}

const readEnv = (out: string) => {
  const env: Record<string, string> = {}
  for (const line of out.split("\n")) {
    const m = /^(?:export\s+)?([A-Z_]+)=["']?([^"'\s]*)["']?\s*$/.exec(line.trim())
    if (m) env[m[1]!] = m[2]!
  }
  return env
}

/** DATABASE_URL/KAFKA_BROKERS from the environment, else from scripts/infra.sh (started if needed). */
export const infrastructure = (): { databaseUrl: string; brokers: string } => {
  if (process.env.DATABASE_URL && process.env.KAFKA_BROKERS)
    return { databaseUrl: process.env.DATABASE_URL, brokers: process.env.KAFKA_BROKERS }
  let out: string
  try {
    out = execFileSync("bash", [INFRA, "env"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] })
  } catch {
    out = execFileSync("bash", [INFRA, "up"], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] })
  }
  const env = readEnv(out)
  return { databaseUrl: env.DATABASE_URL!, brokers: env.KAFKA_BROKERS! }
}

export const withSql = <A, E>(url: string, f: (sql: SqlClient.SqlClient) => Effect.Effect<A, E>) =>
  Effect.gen(function* () {
    return yield* f(yield* SqlClient.SqlClient)
  }).pipe(Effect.provide(PgClient.layer({ url: Redacted.make(url), maxConnections: 2 })))

export const sqlLayer = (url: string, maxConnections = 4) => PgClient.layer({ url: Redacted.make(url), maxConnections })

const databaseUrlFor = (base: string, name: string) => {
  const url = new URL(base)
  url.pathname = `/${name}`
  return url.toString()
}

/** A new database (migrated) and new topics for one scenario. */
export const freshScenario = (base: { databaseUrl: string; brokers: string }, partitions: number) =>
  Effect.gen(function* () {
    const run = randomBytes(3).toString("hex")
    const name = `outbox_bench_${run}`
    yield* withSql(base.databaseUrl, (sql) => sql.unsafe(`CREATE DATABASE ${name}`))
    const databaseUrl = databaseUrlFor(base.databaseUrl, name)
    yield* migrate().pipe(Effect.provide(sqlLayer(databaseUrl, 1)))
    const topicMap = Object.fromEntries(DEFAULT_EVENT_TYPES.map((t) => [t, `bench-${run}-${t}`]))
    const dlqTopic = `bench-${run}-dlq`
    yield* ensureTopics(base.brokers.split(","), [...Object.values(topicMap), dlqTopic], partitions)
    return { databaseUrl, adminUrl: base.databaseUrl, brokers: base.brokers, topicMap, dlqTopic, name } satisfies BenchEnv & {
      name: string
    }
  })

export const dropScenario = (env: BenchEnv & { name: string }) =>
  withSql(env.adminUrl, (sql) => sql.unsafe(`DROP DATABASE IF EXISTS ${env.name} WITH (FORCE)`)).pipe(Effect.ignore)
