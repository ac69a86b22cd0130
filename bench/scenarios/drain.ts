/**
 * A backlog drained by 1..n relay processes: events/s from the first SENT to the last, and
 * from the relay's process start to the last; and what each event cost the machine, split
 * into the relay, PostgreSQL and the broker.
 */
import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import { type BenchEnv, sqlLayer } from "../support/bench-env.ts"
import { CpuLedger, listenerPid, postgresAuxiliaryPids } from "../support/process-cpu.ts"
import { processCost, type RelayVariant, startRelay } from "../support/relay-process.ts"
import { seedRows } from "../support/seed.ts"

export interface DrainResult {
  readonly events: number
  readonly instances: number
  /** First SENT to last SENT. */
  readonly seconds: number
  readonly eventsPerSecond: number
  /** From spawning the relay process(es) to the last SENT: start-up included. */
  readonly fromStartEventsPerSecond: number
  /** The relay process(es) from "relay started" to the end; start-up (module loading, connecting) is not in it. */
  readonly cpuMicrosPerEvent: number
  /** The relay process(es) including start-up. */
  readonly relayTotalCpuMicrosPerEvent: number
  /** The backends serving the relay's connections. */
  readonly postgresBackendsCpuMicrosPerEvent: number
  /** Backends plus the cluster's checkpointer, background writer, walwriter and autovacuum. */
  readonly postgresCpuMicrosPerEvent: number
  readonly brokerCpuMicrosPerEvent: number
  /** Relay (without start-up) + PostgreSQL + broker. */
  readonly machineCpuMicrosPerEvent: number
  readonly peakRssMb: number
}

export const relayEnv = (env: BenchEnv, extra: Record<string, string> = {}) => ({
  DATABASE_URL: env.databaseUrl,
  KAFKA_BROKERS: env.brokers,
  TOPIC_MAP: JSON.stringify(env.topicMap),
  DLQ_TOPIC: env.dlqTopic,
  ...extra,
})

/** Waits until no row is pending, polling over one connection; `onPoll` runs at every poll. */
export const waitDrained = (
  url: string,
  timeoutMs: number,
  onPoll: (sql: SqlClient.SqlClient) => Effect.Effect<void, unknown> = () => Effect.void,
) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const deadline = Date.now() + timeoutMs
    for (;;) {
      yield* onPoll(sql)
      // The first pending row by id, which the partial pending index answers at once: a count
      // (or an EXISTS the planner turns into a sequential scan past the SENT history) every
      // poll would cost PostgreSQL the CPU the relay under test needs.
      const rows = yield* sql`SELECT id FROM outbox_event WHERE status IN ('NEW', 'FAILED') ORDER BY id LIMIT 1`
      if (rows.length === 0) return
      if (Date.now() > deadline) return yield* Effect.fail(new Error(`rows still pending after ${timeoutMs} ms`))
      yield* Effect.sleep("100 millis")
    }
  }).pipe(Effect.provide(sqlLayer(url, 1)))

const lastSentAt = (url: string) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const [row] = yield* sql<{ firstMs: number; ms: number; sent: number }>`
      SELECT (extract(epoch FROM min(sent_at)) * 1000)::float8 AS "firstMs", (extract(epoch FROM max(sent_at)) * 1000)::float8 AS ms,
             count(*)::int AS sent
        FROM outbox_event WHERE status = 'SENT' AND kafka_topic <> 'history'`
    return row!
  }).pipe(Effect.provide(sqlLayer(url, 1)))

export const drain = (
  env: BenchEnv,
  options: { events: number; instances: number; seed?: boolean; relay?: Record<string, string>; variant?: RelayVariant },
) =>
  Effect.gen(function* () {
    if (options.seed !== false) yield* seedRows(env.databaseUrl, { count: options.events, status: "NEW", keys: 1000, prefix: "drain" })
    const relays = yield* Effect.forEach(
      Array.from({ length: options.instances }),
      () => startRelay(relayEnv(env, options.relay), options.variant),
      {
        concurrency: "unbounded",
      },
    )
    const spawnedAt = Math.min(...relays.map((r) => r.spawnedAt))
    // The broker and PostgreSQL's background processes run for others too: only their CPU from now on counts.
    const broker = new CpuLedger()
    const brokerPid = listenerPid(Number(env.brokers.split(",")[0]!.split(":").at(-1)))
    const postmaster = listenerPid(Number(new URL(env.databaseUrl).port || 5432))
    const auxiliary = new CpuLedger()
    const backends = new CpuLedger()
    const observeOthers = () => {
      if (brokerPid !== undefined) broker.observe(brokerPid, false)
      if (postmaster !== undefined) for (const pid of postgresAuxiliaryPids(postmaster)) auxiliary.observe(pid, false)
    }
    // Counted as 0 when not found (`ss` missing, or the process not visible to this user): say so.
    if (brokerPid === undefined) process.stderr.write("bench: the broker's process was not found; its CPU is not counted\n")
    if (postmaster === undefined)
      process.stderr.write("bench: PostgreSQL's postmaster was not found; its background processes are not counted\n")
    observeOthers()
    // The relay's backends are new with it: all their CPU counts. Read at every poll, so one that
    // closes (an idle pool connection) keeps what it used.
    const observeBackends = (sql: SqlClient.SqlClient) =>
      Effect.map(
        sql<{ pid: number }>`SELECT pid FROM pg_stat_activity WHERE application_name = 'outbox-relay' AND datname = current_database()`,
        (rows) => {
          for (const { pid } of rows) backends.observe(pid, true)
        },
      )
    let polls = 0
    yield* waitDrained(env.databaseUrl, 30 * 60_000, (sql) => {
      // Walking /proc for the auxiliary processes every 100 ms would itself cost; once a second is enough.
      if (polls++ % 10 === 0) observeOthers()
      return observeBackends(sql)
    })
    yield* waitDrained(env.databaseUrl, 1_000, observeBackends)
    observeOthers()
    const costs = relays.map((r) => ({ ...processCost(r.child.pid!), atStart: r.cpuAtStart }))
    const last = yield* lastSentAt(env.databaseUrl)
    const seconds = (last.ms - last.firstMs) / 1000
    const perEvent = (cpuSeconds: number) => (cpuSeconds / last.sent) * 1e6
    const relayTotal = costs.reduce((s, c) => s + c.cpuSeconds, 0)
    const relayRunning = costs.reduce((s, c) => s + c.cpuSeconds - c.atStart, 0)
    const postgres = backends.seconds + auxiliary.seconds
    return {
      events: last.sent,
      instances: options.instances,
      seconds,
      eventsPerSecond: last.sent / seconds,
      fromStartEventsPerSecond: last.sent / ((last.ms - spawnedAt) / 1000),
      cpuMicrosPerEvent: perEvent(relayRunning),
      relayTotalCpuMicrosPerEvent: perEvent(relayTotal),
      postgresBackendsCpuMicrosPerEvent: perEvent(backends.seconds),
      postgresCpuMicrosPerEvent: perEvent(postgres),
      brokerCpuMicrosPerEvent: perEvent(broker.seconds),
      machineCpuMicrosPerEvent: perEvent(relayRunning + postgres + broker.seconds),
      peakRssMb: Math.max(...costs.map((c) => c.peakRssMb)),
    } satisfies DrainResult
  }).pipe(Effect.scoped)
