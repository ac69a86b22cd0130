/** SQL for fault tests: a database per scenario, and the outbox read back row by row. */
import { randomBytes } from "node:crypto"
import { PgClient } from "@effect/sql-pg"
import { Effect, ManagedRuntime, Redacted } from "effect"
import { SqlClient, type SqlError } from "effect/sql"
import { inject } from "vitest"
import { outboxRelay } from "./processes.ts"

export interface Db {
  readonly url: string
  readonly run: <A>(f: (sql: SqlClient.SqlClient) => Effect.Effect<A, SqlError.SqlError>) => Promise<A>
  readonly close: () => Promise<void>
}

/** A small pool on `url`; it reconnects by itself after a server restart. */
export const openDb = async (url: string, maxConnections = 2): Promise<Db> => {
  const runtime = ManagedRuntime.make(PgClient.layer({ url: Redacted.make(url), maxConnections, connectTimeout: "2 seconds" }))
  const db: Db = {
    url,
    run: (f) =>
      runtime.runPromise(
        Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          return yield* f(sql)
        }),
      ),
    close: () => runtime.dispose(),
  }
  await db.run((sql) => sql`SELECT 1`)
  return db
}

/** Applies the outbox schema the way operators do: `outbox-relay migrate`. */
export const migrateWithCli = async (url: string): Promise<void> => {
  const result = await outboxRelay(["migrate"], { DATABASE_URL: url })
  if (result.code !== 0) throw new Error(`outbox-relay migrate exited ${result.code}:\n${result.output}`)
}

const adminUrl = () => inject("databaseUrl")

const urlFor = (name: string): string => {
  const url = new URL(adminUrl())
  url.pathname = `/${name}`
  return url.toString()
}

/** A fresh, migrated database on the shared server; `drop` removes it. */
export const scenarioDatabase = async (): Promise<{ readonly url: string; readonly drop: () => Promise<void> }> => {
  const name = `outbox_fault_${randomBytes(5).toString("hex")}`
  const admin = await openDb(adminUrl(), 1)
  try {
    await admin.run((sql) => sql.unsafe(`CREATE DATABASE ${name}`))
  } finally {
    await admin.close()
  }
  const url = urlFor(name)
  const drop = async () => {
    const a = await openDb(adminUrl(), 1)
    try {
      await a.run((sql) => sql.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`))
    } finally {
      await a.close()
    }
  }
  try {
    await migrateWithCli(url)
  } catch (e) {
    await drop()
    throw e
  }
  return { url, drop }
}

export interface OutboxRow {
  readonly id: string
  readonly dedup_key: string
  readonly event_type: string
  readonly aggregate_key: string | null
  readonly status: string
  readonly dead_reason: string | null
  readonly attempts: number
  readonly last_error: string | null
  readonly locked_by: string | null
  readonly kafka_topic: string | null
}

export const readOutbox = (db: Db): Promise<ReadonlyArray<OutboxRow>> =>
  db.run(
    (sql) => sql<OutboxRow>`
      SELECT id::text AS id, dedup_key, event_type, aggregate_key, status, dead_reason, attempts, last_error, locked_by, kafka_topic
        FROM outbox_event ORDER BY id`,
  )

export const maxId = async (db: Db): Promise<number> => {
  const [row] = await db.run((sql) => sql<{ max: string | null }>`SELECT max(id)::text AS max FROM outbox_event`)
  return Number(row?.max ?? 0)
}

/** Rows still to relay (NEW or FAILED), all of them or those up to `upToId`. */
export const pendingCount = async (db: Db, upToId = Number.MAX_SAFE_INTEGER): Promise<number> => {
  const [row] = await db.run(
    (sql) => sql<{ n: number }>`SELECT count(*)::int AS n FROM outbox_event WHERE status IN ('NEW', 'FAILED') AND id <= ${upToId}`,
  )
  return row?.n ?? 0
}

export const sentCount = async (db: Db): Promise<number> => {
  const [row] = await db.run((sql) => sql<{ n: number }>`SELECT count(*)::int AS n FROM outbox_event WHERE status = 'SENT'`)
  return row?.n ?? 0
}

/**
 * Waits until no row up to `upToId` is pending and gives the seconds it took from `sinceMs`:
 * the time to recover once a fault healed. Database errors (a restart) only mean "not yet".
 */
export const waitDrained = async (db: Db, options: { readonly upToId?: number; readonly sinceMs: number; readonly timeoutMs: number }) => {
  const deadline = Date.now() + options.timeoutMs
  for (;;) {
    const pending = await pendingCount(db, options.upToId).catch(() => -1)
    if (pending === 0) return (Date.now() - options.sinceMs) / 1000
    if (Date.now() > deadline) {
      throw new Error(`${pending} row(s) up to id ${options.upToId ?? "∞"} still pending after ${options.timeoutMs} ms`)
    }
    await new Promise((r) => setTimeout(r, 50))
  }
}

/** Waits until at least `n` rows are SENT (the stream is flowing). */
export const waitSent = async (db: Db, n: number, timeoutMs = 30_000): Promise<void> => {
  const deadline = Date.now() + timeoutMs
  while ((await sentCount(db)) < n) {
    if (Date.now() > deadline) throw new Error(`fewer than ${n} rows SENT after ${timeoutMs} ms`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

/** Rows leased and not yet marked (a batch in flight), of instances whose name starts with `instancePrefix`. */
export const heldCount = async (db: Db, instancePrefix = ""): Promise<number> => {
  const [row] = await db.run(
    (sql) => sql<{ n: number }>`
      SELECT count(*)::int AS n FROM outbox_event
       WHERE status IN ('NEW', 'FAILED') AND locked_by LIKE ${`${instancePrefix}%`} AND locked_until > now()`,
  )
  return row?.n ?? 0
}

/** Polls without pause until some instance holds a batch in flight (then a fault hits mid-batch). */
export const waitUntilHolding = async (db: Db, instancePrefix: string, timeoutMs: number, stillValid: () => boolean = () => true) => {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline && stillValid()) {
    if ((await heldCount(db, instancePrefix)) > 0) return
  }
  throw new Error(`no batch of ${instancePrefix || "any instance"} seen in flight within ${timeoutMs} ms`)
}

/** `waitDrained`, started now and awaited later (a failure surfaces where it is awaited, never as an unhandled rejection). */
export const startDrainTimer = (db: Db, options: { readonly upToId?: number; readonly sinceMs: number; readonly timeoutMs: number }) => {
  const drained = waitDrained(db, options)
  drained.catch(() => undefined)
  return drained
}
