/**
 * Nothing waits forever unseen, against the real relay process, PostgreSQL and Kafka:
 * - a dead-letter topic that does not exist (KAFKA_AUTO_CREATE_TOPICS=false) is a WARN at start
 *   naming it and the settings; while dead letters wait for it, a WARN (at most once a minute),
 *   /readyz 200 "degraded" with the reason, and outbox_dead_letter_waiting count them; poison rows'
 *   attempts stay within MAX_ATTEMPTS, and once the topic exists they end DEAD on it;
 * - rows leased or scheduled far beyond what the relay's settings write are counted
 *   (outbox_stuck_rows), listed (GET /admin/stuck, `outbox-relay stuck`), freed (POST
 *   /admin/stuck/free, `outbox-relay unstick`), audited, and then relayed in key order;
 * - a row's own headers named like the relay's in another case (DEDUP_KEY, Dlq.Reason) never
 *   reach Kafka, on a record or on a dead letter.
 */

import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import { ensureTopics } from "../../src/kafka/topics.ts"
import type { Db } from "../support/fault/fault-db.ts"
import { readAll } from "../support/fault/kafka-readback.ts"
import { freePort, outboxRelay, sleep } from "../support/fault/processes.ts"
import type { RelayProcess } from "../support/fault/relay-process.ts"
import { Scenario, stage } from "../support/fault/scenario.ts"

const TOKEN = "waiting-rows-admin-token-0123456"
const auth = { authorization: `Bearer ${TOKEN}` }

const startWithPort = async (s: Scenario, name: string, env: Readonly<Record<string, string>>) => {
  const port = await freePort()
  const relay: RelayProcess = s.startRelay(name, { ...env, HTTP_PORT: String(port) })
  return { relay, baseUrl: `http://127.0.0.1:${port}` }
}

const getJson = async (url: string): Promise<{ status: number; body: Record<string, unknown> }> => {
  const response = await fetch(url, { headers: auth, signal: AbortSignal.timeout(15_000) })
  return { status: response.status, body: (await response.json()) as Record<string, unknown> }
}

const postJson = async (url: string, body: unknown): Promise<{ status: number; body: Record<string, unknown> }> => {
  const response = await fetch(url, {
    method: "POST",
    headers: { ...auth, "content-type": "application/json" },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(15_000),
  })
  return { status: response.status, body: (await response.json()) as Record<string, unknown> }
}

/** One unlabelled sample of a gauge from the Prometheus text (undefined when absent). */
const gauge = async (baseUrl: string, name: string): Promise<number | undefined> => {
  const text = await (await fetch(`${baseUrl}/metrics`, { signal: AbortSignal.timeout(15_000) })).text()
  const match = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "m").exec(text)
  return match === null ? undefined : Number(match[1])
}

/** Polls `check` until it gives a value `done` accepts; fails naming `what` after `timeoutMs`. */
const until = async <A>(check: () => Promise<A>, done: (a: A) => boolean, timeoutMs: number, what: string): Promise<A> => {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await check()
    if (done(value)) return value
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what} (last: ${JSON.stringify(value)})`)
    await sleep(200)
  }
}

interface Row {
  readonly id: string
  readonly dedup_key: string
  readonly aggregate_key: string | null
  readonly status: string
  readonly attempts: number
  readonly dead_reason: string | null
  readonly last_error: string | null
}

const rows = (db: Db) =>
  db.run(
    (sql) => sql<Row>`
      SELECT id::text, dedup_key, aggregate_key, status, attempts, dead_reason, last_error FROM outbox_event ORDER BY id`,
  )

describe("rows that wait on an operator", () => {
  it("a missing dead-letter topic is a WARN at start and while dead letters wait, /readyz degraded, the gauge counts them, attempts stay within MAX_ATTEMPTS", async () => {
    const s = new Scenario("missing dlq")
    const st = await stage(s, { label: "nodlq" })
    const missingDlq = `${st.topics.dlq}-missing`
    const { relay, baseUrl } = await startWithPort(s, "waiting-nodlq", {
      ...st.relayEnv,
      DLQ_TOPIC: missingDlq,
      KAFKA_AUTO_CREATE_TOPICS: "false",
      MAX_ATTEMPTS: "3",
      GAUGE_REFRESH_MS: "1000",
      ADMIN_TOKEN: TOKEN,
    })
    const atStart = await relay.waitForLog(`dead-letter topic "${missingDlq}" (DLQ_TOPIC) does not exist`, 30_000)
    expect(atStart.level).toMatch(/^warn/)
    expect(atStart.message).toContain("KAFKA_AUTO_CREATE_TOPICS=false")

    // Two poison rows (no topic for their type: dead-lettered at once), each ahead of later rows
    // of its key, and rows of other keys that must not wait.
    const clickTopic = st.topics.map.search_click!
    await st.db.run(
      (sql) => sql`
        INSERT INTO outbox_event (dedup_key, event_type, aggregate_key, payload)
        VALUES ('poison-a', 'no_such_type', 'key-a', '{}'), ('poison-b', 'no_such_type', 'key-b', '{}'),
               ('after-a-1', 'search_click', 'key-a', '{}'), ('after-b-1', 'search_click', 'key-b', '{}'),
               ('other-1', 'search_click', 'key-c', '{}'), ('other-2', 'search_click', 'key-d', '{}')`,
    )
    await until(
      () => rows(st.db),
      (rs) => rs.filter((r) => r.dedup_key.startsWith("other-")).every((r) => r.status === "SENT"),
      30_000,
      "rows of other keys SENT",
    )
    const waiting = await until(
      () => gauge(baseUrl, "outbox_dead_letter_waiting"),
      (n) => n === 2,
      30_000,
      "outbox_dead_letter_waiting = 2",
    )
    expect(waiting).toBe(2)
    const warn = await relay.waitForLog(`dead letters wait for the dead-letter topic "${missingDlq}" (DLQ_TOPIC)`, 15_000)
    expect(warn.level).toMatch(/^warn/)
    expect(warn).toMatchObject({ problem: "dead_letters_waiting", count: 2, dlq_topic: missingDlq, kafka_auto_create_topics: false })
    expect(warn.action).toContain("KAFKA_AUTO_CREATE_TOPICS=false")

    const ready = await getJson(`${baseUrl}/readyz`)
    expect(ready.status).toBe(200)
    expect(ready.body.status).toBe("degraded")
    expect(ready.body.degraded).toEqual([expect.objectContaining({ reason: "dead_letters_waiting", count: 2 })])
    expect(JSON.stringify(ready.body.degraded)).toContain(missingDlq)

    // Let the waiting rows be retried for the dead letter a few times: attempts never grow past
    // MAX_ATTEMPTS, and the later rows of their keys still wait.
    await sleep(6_000)
    const during = await rows(st.db)
    const poison = during.filter((r) => r.dedup_key.startsWith("poison-"))
    console.log(`[waiting rows] poison rows while the DLQ is missing: ${JSON.stringify(poison.map(({ last_error: _, ...r }) => r))}`)
    for (const r of poison) {
      expect(r.status).toBe("FAILED")
      expect(r.dead_reason).toBe("unknown_event_type")
      expect(r.attempts).toBeLessThanOrEqual(3)
    }
    expect(during.filter((r) => r.dedup_key.startsWith("after-")).map((r) => r.status)).toEqual(["NEW", "NEW"])
    // Repeated at most once a minute, not on every refresh (6 s at GAUGE_REFRESH_MS=1000).
    expect(relay.linesWith("dead letters wait for the dead-letter topic").length).toBe(1)

    // The operator creates the topic: the dead letters land on it, the keys move on, readiness is back.
    await Effect.runPromise(ensureTopics(st.brokers.split(","), [missingDlq]))
    await until(
      () => rows(st.db),
      (rs) => rs.every((r) => r.status === "SENT" || r.status === "DEAD"),
      60_000,
      "every row SENT or DEAD once the topic exists",
    )
    const settled = await rows(st.db)
    expect(settled.filter((r) => r.status === "DEAD").map((r) => [r.dedup_key, r.dead_reason])).toEqual([
      ["poison-a", "unknown_event_type"],
      ["poison-b", "unknown_event_type"],
    ])
    const letters = await readAll(st.brokers, [missingDlq])
    expect(letters.map((m) => m.headers.dedup_key).sort()).toEqual(["poison-a", "poison-b"])
    const records = await readAll(st.brokers, [clickTopic])
    expect(records.map((m) => m.headers.dedup_key).sort()).toEqual(["after-a-1", "after-b-1", "other-1", "other-2"])
    await until(
      () => gauge(baseUrl, "outbox_dead_letter_waiting"),
      (n) => n === 0,
      15_000,
      "gauge back to 0",
    )
    const readyAgain = await until(
      () => getJson(`${baseUrl}/readyz`),
      (r) => r.body.status === "ready",
      15_000,
      "/readyz ready",
    )
    expect(readyAgain.status).toBe(200)
    await relay.waitForLog("no dead letter waits for the dead-letter topic any more", 15_000)
  }, 180_000)

  it("rows leased or scheduled beyond the settings are counted, listed, freed with an audit line, then relayed in key order", async () => {
    const s = new Scenario("stuck rows")
    const st = await stage(s, { label: "stuck" })
    const topic = st.topics.map.search_click!
    const env = { ...st.relayEnv, GAUGE_REFRESH_MS: "1000", ADMIN_TOKEN: TOKEN }
    const { relay, baseUrl } = await startWithPort(s, "waiting-stuck", env)
    await relay.ready()

    // key-r: its head's retry is set to the year 2999; key-l: its head is leased until 2999 by an
    // instance that does not exist; each holds two later rows. key-n runs freely.
    const inserted = await st.db.run(
      (sql) => sql<{ id: string; dedup_key: string }>`
        INSERT INTO outbox_event (dedup_key, event_type, aggregate_key, payload, next_attempt_at, locked_by, locked_until)
        VALUES ('r-0', 'search_click', 'key-r', '{}', '2999-01-01', NULL, NULL),
               ('l-0', 'search_click', 'key-l', '{}', now(), 'ghost-instance', '2999-01-01'),
               ('r-1', 'search_click', 'key-r', '{}', now(), NULL, NULL),
               ('l-1', 'search_click', 'key-l', '{}', now(), NULL, NULL),
               ('n-0', 'search_click', 'key-n', '{}', now(), NULL, NULL),
               ('r-2', 'search_click', 'key-r', '{}', now(), NULL, NULL),
               ('l-2', 'search_click', 'key-l', '{}', now(), NULL, NULL)
        RETURNING id::text, dedup_key`,
    )
    const idOf = (key: string) => inserted.find((r) => r.dedup_key === key)!.id

    await until(
      () => gauge(baseUrl, "outbox_stuck_rows"),
      (n) => n === 2,
      30_000,
      "outbox_stuck_rows = 2",
    )
    await until(
      () => rows(st.db),
      (rs) => rs.find((r) => r.dedup_key === "n-0")?.status === "SENT",
      30_000,
      "n-0 SENT",
    )
    const warn = await relay.waitForLog("pending rows are leased or scheduled beyond", 15_000)
    expect(warn.level).toMatch(/^warn/)
    expect(warn).toMatchObject({ problem: "stuck_rows", count: 2 })
    const ready = await getJson(`${baseUrl}/readyz`)
    expect(ready.status).toBe(200)
    expect(ready.body.status).toBe("degraded")
    expect(ready.body.degraded).toEqual([expect.objectContaining({ reason: "stuck_rows", count: 2 })])
    expect((await getJson(`${baseUrl}/admin/status`)).body.degraded).toEqual([expect.objectContaining({ reason: "stuck_rows", count: 2 })])

    // Listed by the admin API and the CLI, with the rows each one holds back.
    const listed = await getJson(`${baseUrl}/admin/stuck?limit=10`)
    expect(listed.status).toBe(200)
    const beyond = listed.body.beyond_settings as ReadonlyArray<{ id: string; flags: ReadonlyArray<string>; rows_behind: number }>
    expect(beyond.map((r) => [r.id, r.flags, r.rows_behind])).toEqual([
      [idOf("r-0"), ["retry_beyond_settings"], 2],
      [idOf("l-0"), ["lease_beyond_settings"], 2],
    ])
    const heads = listed.body.oldest_per_key as ReadonlyArray<{ id: string }>
    expect(heads.map((r) => r.id)).toEqual([idOf("r-0"), idOf("l-0")])
    const cli = await outboxRelay(["stuck", "--json"], { DATABASE_URL: st.db.url, LEASE_MS: "3000", BACKOFF_MAX_MS: "1000" })
    expect(cli.code, cli.output).toBe(0)
    const cliRows = cli.output
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as { listing: string; id: string })
    expect(cliRows.filter((r) => r.listing === "beyond_settings").map((r) => r.id)).toEqual([idOf("r-0"), idOf("l-0")])

    // A dry run changes nothing; then one row is freed by the CLI, the other by the admin API.
    const dry = await postJson(`${baseUrl}/admin/stuck/free`, { all: true, dry_run: true })
    expect(dry.status).toBe(200)
    expect(dry.body).toMatchObject({ dry_run: true, count: 2, audit_id: null })
    const freedByCli = await outboxRelay(["unstick", "--id", idOf("r-0"), "--actor", "alice"], {
      DATABASE_URL: st.db.url,
      LEASE_MS: "3000",
      BACKOFF_MAX_MS: "1000",
    })
    expect(freedByCli.code, freedByCli.output).toBe(0)
    expect(freedByCli.output).toContain("Freed 1 row(s)")
    const freedByApi = await postJson(`${baseUrl}/admin/stuck/free`, { all: true, actor: "bob" })
    expect(freedByApi.status).toBe(200)
    expect(freedByApi.body).toMatchObject({ dry_run: false, count: 1 })
    expect((freedByApi.body.freed as ReadonlyArray<{ id: string }>).map((r) => r.id)).toEqual([idOf("l-0")])

    const audit = await st.db.run(
      (sql) => sql<{ actor: string; origin: string; action: string; event_ids: ReadonlyArray<string> }>`
        SELECT actor, origin, selection->>'action' AS action, event_ids::text[] AS event_ids FROM outbox_replay_audit ORDER BY id`,
    )
    expect(audit).toEqual([
      { actor: "alice", origin: "cli", action: "unstick", event_ids: [idOf("r-0")] },
      { actor: "bob", origin: "admin-api", action: "unstick", event_ids: [idOf("l-0")] },
    ])

    // Freed, every row is relayed, each key in id order.
    await until(
      () => rows(st.db),
      (rs) => rs.every((r) => r.status === "SENT"),
      30_000,
      "every row SENT",
    )
    const records = await readAll(st.brokers, [topic])
    const order = (key: string) =>
      records
        .filter((m) => m.key === key)
        .sort((a, b) => a.partition - b.partition || a.offset - b.offset)
        .map((m) => m.headers.dedup_key)
    expect(order("key-r")).toEqual(["r-0", "r-1", "r-2"])
    expect(order("key-l")).toEqual(["l-0", "l-1", "l-2"])
    expect(records).toHaveLength(7)
    await until(
      () => gauge(baseUrl, "outbox_stuck_rows"),
      (n) => n === 0,
      15_000,
      "outbox_stuck_rows back to 0",
    )
    await until(
      () => getJson(`${baseUrl}/readyz`),
      (r) => r.body.status === "ready",
      15_000,
      "/readyz ready",
    )
  }, 180_000)

  it("a row's headers named like the relay's in another case never reach Kafka, on a record or a dead letter", async () => {
    const s = new Scenario("reserved headers")
    const st = await stage(s, { label: "hdrcase" })
    const { relay } = await startWithPort(s, "waiting-headers", st.relayEnv)
    await relay.ready()
    const own = JSON.stringify({
      DEDUP_KEY: "spoofed",
      Event_Id: "spoofed",
      EVENT_TYPE: "spoofed",
      "Dlq.Reason": "spoofed",
      "DLQ.ORIGINAL_TOPIC": "spoofed",
      tenant: "acme",
    })
    await st.db.run(
      (sql) => sql`
        INSERT INTO outbox_event (dedup_key, event_type, aggregate_key, payload, headers)
        VALUES ('hdr-record', 'search_click', 'key-h', '{}', ${own}::jsonb),
               ('hdr-dead', 'no_such_type', 'key-h', '{}', ${own}::jsonb)`,
    )
    await until(
      () => rows(st.db),
      (rs) => rs.length === 2 && rs.every((r) => r.status === "SENT" || r.status === "DEAD"),
      30_000,
      "both rows settled",
    )
    const [record] = await readAll(st.brokers, [st.topics.map.search_click!])
    const [letter] = await readAll(st.brokers, [st.topics.dlq])
    for (const [label, m] of [
      ["record", record],
      ["dead letter", letter],
    ] as const) {
      expect(m, label).toBeDefined()
      const names = Object.keys(m!.headers)
      // Every header name appears once, whatever its case, and the row's spoofed values are gone.
      expect(new Set(names.map((n) => n.toLowerCase())).size, `${label}: ${names.join(", ")}`).toBe(names.length)
      expect(Object.values(m!.headers), label).not.toContain("spoofed")
    }
    // A dead letter whose event never became a record (unknown type) carries the relay's headers only.
    expect(record!.headers.tenant).toBe("acme")
    expect(record!.headers.dedup_key).toBe("hdr-record")
    expect(letter!.headers.dedup_key).toBe("hdr-dead")
    expect(letter!.headers["dlq.reason"]).toBe("unknown_event_type")
    expect(letter!.headers["dlq.original_topic"]).toBe("")
  }, 120_000)
})
