/**
 * The kill/rebalance run: a consumer group of real processes (consumer-worker.ts) projects
 * a stream of clicks while members are SIGKILLed and restarted, extra members join and
 * leave (rebalances), and some clicks are on Kafka twice (as a relay takeover leaves them).
 * Every application is logged in the inbox transaction, so the figures are read from
 * PostgreSQL, not from the consumers' own counts:
 *
 *   produced       distinct clicks written to Kafka (plus the copies)
 *   applied once   distinct clicks in the application log
 *   duplicates     applications beyond the first, per click (must be 0)
 *   lost           produced clicks neither applied nor dead-lettered (must be 0)
 *   skipped        deliveries the inbox turned into skips: the copies, plus redeliveries
 *
 * By hand (DATABASE_URL: any database on the server; a fresh one is created per run):
 *   DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres KAFKA_BROKERS=127.0.0.1:9092 \
 *     CLICKS=20000 SECONDS=60 npx node test/support/consumer-soak.ts
 */
import { type ChildProcess, spawn } from "node:child_process"
import { randomBytes, randomUUID } from "node:crypto"
import { createWriteStream, mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { PgClient } from "@effect/sql-pg"
import { Effect, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import { ensureProjectionTable } from "../../examples/search-clicks-projection/projection.ts"
import { ensureInboxTable } from "../../src/consumer.ts"
import { Kafka } from "../../src/kafka/kafkajs.ts"
import { ensureTopics } from "../../src/kafka/topics.ts"

export interface SoakOptions {
  /** Server URL; the run creates (and drops) its own database on it. */
  readonly databaseUrl: string
  readonly brokers: ReadonlyArray<string>
  readonly clicks: number
  /** How long the clicks are spread over; members are killed and started during it. */
  readonly seconds: number
  readonly members: number
  readonly partitions: number
  /** Share of clicks sent a second time, later in the stream. */
  readonly copyRate: number
  /** A member is SIGKILLed (and a new one started) this often. */
  readonly killEveryMs: number
  /** How long to wait for the group to catch up after the last click. */
  readonly drainTimeoutMs: number
  readonly log?: (line: string) => void
}

export interface SoakFigures {
  readonly produced: number
  readonly copiesOnKafka: number
  readonly messagesOnKafka: number
  readonly appliedOnce: number
  readonly duplicatesApplied: number
  readonly lost: number
  readonly deadLettered: number
  readonly sigkills: number
  readonly membersStarted: number
  readonly gracefulLeaves: number
  /** Deliveries the inbox skipped: the copies, plus redeliveries after kills and rebalances. */
  readonly skippedDeliveries: number
  readonly fullyCommitted: boolean
  readonly appliedByMember: Readonly<Record<string, number>>
  readonly seconds: number
  readonly logDir: string
}

const WORKER = fileURLToPath(new URL("./consumer-worker.ts", import.meta.url))
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

const runSql = <A>(url: string, f: (sql: SqlClient.SqlClient) => Effect.Effect<A, unknown>) =>
  Effect.runPromise(
    Effect.gen(function* () {
      return yield* f(yield* SqlClient.SqlClient)
    }).pipe(Effect.provide(PgClient.layer({ url: Redacted.make(url), maxConnections: 1 })), Effect.orDie),
  )

const databaseUrl = (server: string, name: string) => {
  const url = new URL(server)
  url.pathname = `/${name}`
  return url.toString()
}

export const runKillRebalance = async (o: SoakOptions): Promise<SoakFigures> => {
  const log = o.log ?? (() => undefined)
  const run = randomBytes(4).toString("hex")
  const dbName = `consumer_soak_${run}`
  const topic = `soak-${run}-clicks`
  const groupId = `soak-${run}`
  const logDir = mkdtempSync(join(tmpdir(), `consumer-soak-${run}-`))
  const started = Date.now()
  await runSql(o.databaseUrl, (sql) => sql.unsafe(`CREATE DATABASE ${dbName}`))
  const url = databaseUrl(o.databaseUrl, dbName)
  const members = new Map<string, ChildProcess>()
  const counts = { sigkills: 0, membersStarted: 0, gracefulLeaves: 0 }
  try {
    await runSql(url, (sql) =>
      Effect.gen(function* () {
        yield* ensureInboxTable
        yield* ensureProjectionTable
        yield* sql`CREATE TABLE applied_log (
          id bigserial PRIMARY KEY, dedup_key text NOT NULL, worker text NOT NULL,
          kafka_partition integer NOT NULL, kafka_offset bigint NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`
        yield* sql`CREATE TABLE skipped_log (id bigserial PRIMARY KEY, dedup_key text NOT NULL, worker text NOT NULL)`
      }).pipe(Effect.provideService(SqlClient.SqlClient, sql)),
    )
    await Effect.runPromise(ensureTopics(o.brokers, [topic, `${topic}.dlq`], o.partitions).pipe(Effect.orDie))

    const startMember = () => {
      const name = `m${++counts.membersStarted}`
      const out = createWriteStream(join(logDir, `${name}.log`))
      const child = spawn(process.execPath, [WORKER], {
        env: { ...process.env, DATABASE_URL: url, KAFKA_BROKERS: o.brokers.join(","), TOPIC: topic, GROUP_ID: groupId, WORKER: name },
        stdio: ["ignore", "pipe", "pipe"],
      })
      child.stdout?.pipe(out)
      child.stderr?.pipe(out)
      members.set(name, child)
      child.on("exit", () => members.delete(name))
      log(`started ${name} (pid ${child.pid})`)
      return name
    }
    const pick = () => {
      const names = [...members.keys()]
      return names[Math.floor(Math.random() * names.length)]
    }
    for (let i = 0; i < o.members; i++) startMember()

    // The stream: clicks spread over the run, with copies of earlier ones mixed in later.
    const producer = new Kafka({ clientId: `soak-producer-${run}`, brokers: [...o.brokers], logLevel: 1 }).producer()
    await producer.connect()
    const queries = ["tent", "socks", "stove", "rain jacket", "trail shoes"]
    const message = (i: number) => ({
      key: `session-${i % 97}`,
      value: JSON.stringify({ query: queries[i % queries.length], resultId: `r-${i}`, position: i % 10 }),
      headers: { dedup_key: `click-${i}`, event_id: randomUUID(), event_type: "search_click" },
    })
    const batches = Math.max(1, Math.round(o.seconds * 10))
    const perBatch = Math.ceil(o.clicks / batches)
    let copies = 0
    let next = 0
    // Chaos runs beside the producer: kill one member (SIGKILL) and start a replacement; every
    // third round start an extra member too, and let one leave with SIGTERM (both rebalance).
    let chaosRunning = true
    const chaos = (async () => {
      let round = 0
      while (chaosRunning) {
        await sleep(o.killEveryMs)
        if (!chaosRunning) break
        round++
        const victim = pick()
        if (victim !== undefined) {
          members.get(victim)?.kill("SIGKILL")
          counts.sigkills++
          log(`SIGKILL ${victim}`)
        }
        startMember()
        if (round % 3 === 0) {
          startMember()
          await sleep(o.killEveryMs / 2)
          const leaver = pick()
          if (leaver !== undefined && members.size > 1) {
            members.get(leaver)?.kill("SIGTERM")
            counts.gracefulLeaves++
            log(`SIGTERM ${leaver}`)
          }
        }
      }
    })()
    const batchEvery = (o.seconds * 1000) / batches
    for (let b = 0; b < batches && next < o.clicks; b++) {
      const batch = []
      for (let i = 0; i < perBatch && next < o.clicks; i++) batch.push(message(next++))
      // Copies of clicks sent a while ago, as a relay that lost its lease sends them again.
      const copyCount = Math.round(batch.length * o.copyRate)
      for (let c = 0; c < copyCount && next > perBatch; c++) {
        const earlier = Math.floor(Math.random() * (next - perBatch))
        batch.push(message(earlier))
        copies++
      }
      await producer.send({ topic, acks: -1, messages: batch })
      await sleep(batchEvery)
    }
    await producer.disconnect()
    chaosRunning = false
    await chaos
    log(`produced ${o.clicks} clicks and ${copies} copies; waiting for the group to catch up`)

    const appliedDistinct = async () =>
      runSql(url, (sql) =>
        sql<{ distinct_keys: number; applications: number }>`
          SELECT count(DISTINCT dedup_key)::int AS distinct_keys, count(*)::int AS applications FROM applied_log`.pipe(
          Effect.map((rows) => rows[0] ?? { distinct_keys: 0, applications: 0 }),
        ),
      )
    const admin = new Kafka({ clientId: `soak-admin-${run}`, brokers: [...o.brokers], logLevel: 1 }).admin()
    await admin.connect()
    const deadLetterCount = async () =>
      (await admin.fetchTopicOffsets(`${topic}.dlq`)).reduce((n, p) => n + Number(p.high) - Number(p.low), 0)
    const drainDeadline = Date.now() + o.drainTimeoutMs
    for (;;) {
      const applied = await appliedDistinct()
      const dead = await deadLetterCount()
      if (applied.distinct_keys + dead >= o.clicks || Date.now() > drainDeadline) break
      await sleep(250)
    }
    // One more SIGKILL once all is applied, then wait until the group has committed every
    // partition to its end: past that point no message can come again, so a duplicate
    // application, had there been one, would be in the log.
    const lastVictim = pick()
    if (lastVictim !== undefined) {
      members.get(lastVictim)?.kill("SIGKILL")
      counts.sigkills++
      log(`SIGKILL ${lastVictim} (after the drain)`)
      startMember()
    }
    const committedToEnd = async () => {
      const ends = await admin.fetchTopicOffsets(topic)
      const [committed] = await admin.fetchOffsets({ groupId, topics: [topic] })
      return ends.every((e) => committed?.partitions.find((p) => p.partition === e.partition)?.offset === e.high)
    }
    const commitDeadline = Date.now() + o.drainTimeoutMs
    let fullyCommitted = await committedToEnd()
    while (!fullyCommitted && Date.now() < commitDeadline) {
      await sleep(250)
      fullyCommitted = await committedToEnd()
    }
    const messagesOnKafka = (await admin.fetchTopicOffsets(topic)).reduce((n, p) => n + Number(p.high), 0)
    const deadLettered = await deadLetterCount()
    await admin.disconnect()
    const figures = await runSql(url, (sql) =>
      sql<{ applied_once: number; duplicates: number; lost: number }>`
        WITH produced AS (SELECT 'click-' || i AS dedup_key FROM generate_series(0, ${o.clicks - 1}) i),
             applied AS (SELECT dedup_key, count(*) AS n FROM applied_log GROUP BY dedup_key)
        SELECT (SELECT count(*) FROM applied)::int AS applied_once,
               (SELECT coalesce(sum(n - 1), 0) FROM applied)::int AS duplicates,
               (SELECT count(*) FROM produced p WHERE NOT EXISTS (SELECT 1 FROM applied a WHERE a.dedup_key = p.dedup_key))::int AS lost`.pipe(
        Effect.map((rows) => rows[0]!),
      ),
    )
    const byMember = await runSql(
      url,
      (sql) => sql<{ worker: string; n: number }>`SELECT worker, count(*)::int AS n FROM applied_log GROUP BY worker ORDER BY worker`,
    )
    const [skipped] = await runSql(url, (sql) => sql<{ n: number }>`SELECT count(*)::int AS n FROM skipped_log`)
    return {
      produced: o.clicks,
      copiesOnKafka: copies,
      messagesOnKafka,
      appliedOnce: figures.applied_once,
      duplicatesApplied: figures.duplicates,
      // A dead-lettered click is not lost (it waits in the DLQ for a replay); the run expects none.
      lost: Math.max(0, figures.lost - deadLettered),
      deadLettered,
      ...counts,
      skippedDeliveries: skipped?.n ?? 0,
      fullyCommitted,
      appliedByMember: Object.fromEntries(byMember.map((r) => [r.worker, r.n])),
      seconds: Math.round((Date.now() - started) / 1000),
      logDir,
    }
  } finally {
    for (const child of members.values()) child.kill("SIGKILL")
    await sleep(500)
    await runSql(o.databaseUrl, (sql) => sql.unsafe(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`)).catch(() => undefined)
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const env = (name: string, fallback: string) => process.env[name] ?? fallback
  const options: SoakOptions = {
    databaseUrl: env("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
    brokers: env("KAFKA_BROKERS", "127.0.0.1:9092").split(","),
    clicks: Number(env("CLICKS", "20000")),
    seconds: Number(env("SECONDS", "60")),
    members: Number(env("MEMBERS", "3")),
    partitions: Number(env("PARTITIONS", "6")),
    copyRate: Number(env("COPY_RATE", "0.05")),
    killEveryMs: Number(env("KILL_EVERY_MS", "5000")),
    drainTimeoutMs: Number(env("DRAIN_TIMEOUT_MS", "120000")),
    log: (line) => process.stderr.write(`[soak] ${line}\n`),
  }
  const figures = await runKillRebalance(options)
  process.stdout.write(`${JSON.stringify(figures, null, 2)}\n`)
  process.exit(figures.duplicatesApplied === 0 && figures.lost === 0 && figures.fullyCommitted ? 0 : 1)
}
