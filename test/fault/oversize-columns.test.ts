/**
 * Rows beyond the table's bounds against the real relay process, PostgreSQL and Kafka: a table
 * whose rows predate migration 7 (its constraints dropped) holds a 17 MiB value in a text column
 * or in headers, and a table migrated with such rows pending. Each such row costs only itself:
 * it ends DEAD with a reason naming what broke, and every other row ends SENT, read back from
 * Kafka by an independent consumer.
 */
import { describe, expect, it } from "vitest"
import { ROW_CHECKS } from "../../src/outbox/row-limits-sql.ts"
import { type EventSpec, insertEvents } from "../support/fault/event-writer.ts"
import { type Db, migrateWithCli, readOutbox, waitDrained } from "../support/fault/fault-db.ts"
import { type KafkaMessage, readAll } from "../support/fault/kafka-readback.ts"
import { account, expectEveryEventAccountedFor, printReport } from "../support/fault/ledger.ts"
import { Scenario, type Stage, stage } from "../support/fault/scenario.ts"

const MiB17 = 17 * 1024 * 1024

const background = (prefix: string, n: number): ReadonlyArray<EventSpec> =>
  Array.from({ length: n }, (_, i) => ({
    dedupKey: `${prefix}-${i}`,
    eventType: i % 2 === 0 ? "search_click" : "ac_select",
    aggregateKey: i % 9 === 0 ? null : `bg-${i % 40}`,
    payload: { i },
  }))

const followers = (key: string, n: number): ReadonlyArray<EventSpec> =>
  Array.from({ length: n }, (_, i) => ({ dedupKey: `${key}-follower-${i}`, eventType: "search_click", aggregateKey: key, payload: { i } }))

const write = async (st: Stage, events: ReadonlyArray<EventSpec>) => {
  for (let i = 0; i < events.length; i += 500) await insertEvents(st.db, events.slice(i, i + 500))
  st.writer.written.push(...events)
}

const dropRowLimits = (db: Db) =>
  db.run((sql) => sql.unsafe(`ALTER TABLE outbox_event ${ROW_CHECKS.map(([name]) => `DROP CONSTRAINT ${name}`).join(", ")}`))

/** A hostile row, inserted by plain SQL; its dedup_key (or, when that is the huge one, its event_id) identifies it. */
interface Hostile {
  readonly label: string
  readonly column: string
  readonly aggregateKey: string
  readonly insert: string
}

/**
 * The ledger's promises for the rows that are not hostile: hostile rows are judged on their own,
 * since the dead letter of a row whose dedup_key is too large carries a stand-in for it.
 */
const settleNormal = async (s: Scenario, st: Stage, isHostile: (dedupKey: string) => boolean) => {
  const rows = await readOutbox(st.db)
  const messages = await readAll(st.brokers, st.topics.all)
  const ledger = account({
    written: st.writer.written,
    rows: rows.filter((r) => !isHostile(r.dedup_key)),
    messages: messages.filter((m) => !isHostile(m.headers.dedup_key ?? "")),
    topicMap: st.topics.map,
    dlqTopic: st.topics.dlq,
  })
  printReport({ scenario: s.name, ledger, wallSeconds: s.elapsedSeconds() })
  expectEveryEventAccountedFor(ledger)
  expect(ledger.duplicates).toBe(0)
  return { rows, messages }
}

describe("rows beyond the table's bounds", () => {
  it("with the bounds dropped, a 17 MiB request_id, traceparent, event_type or headers, or an aggregate_key or dedup_key too large to carry, costs only its row", async () => {
    const s = new Scenario("17 MiB columns")
    const st = await stage(s, { label: "huge-columns", mappedTypes: ["search_click", "ac_select"] })
    await dropRowLimits(st.db)
    // 150 kB keys: the largest a btree index takes (compressed); over this relay's MAX_RECORD_BYTES.
    const hostile: ReadonlyArray<Hostile> = [
      {
        label: "huge-request-id",
        column: "request_id",
        aggregateKey: "hk-request",
        insert: `('huge-request-id', 'search_click', 'hk-request', '{}', '{}', repeat('r', ${MiB17}), NULL)`,
      },
      {
        label: "huge-traceparent",
        column: "traceparent",
        aggregateKey: "hk-trace",
        insert: `('huge-traceparent', 'search_click', 'hk-trace', '{}', '{}', NULL, repeat('t', ${MiB17}))`,
      },
      {
        label: "huge-headers",
        column: "headers",
        aggregateKey: "hk-headers",
        insert: `('huge-headers', 'search_click', 'hk-headers', '{}', jsonb_build_object('h', repeat('h', ${MiB17})), NULL, NULL)`,
      },
      {
        // Its dead letter goes out; its DEAD mark is refused (no index entry holds a 17 MiB
        // event_type), so the row is settled DEAD `unmarkable`, within the bounds.
        label: "huge-event-type",
        column: "event_type",
        aggregateKey: "hk-type",
        insert: `('huge-event-type', repeat('e', ${MiB17}), 'hk-type', '{}', '{}', NULL, NULL)`,
      },
      {
        label: "huge-aggregate-key",
        column: "aggregate_key",
        aggregateKey: `hk-${"k".repeat(150_000)}`,
        insert: `('huge-aggregate-key', 'search_click', 'hk-' || repeat('k', 150000), '{}', '{}', NULL, NULL)`,
      },
      {
        label: "huge-dedup-key",
        column: "dedup_key",
        aggregateKey: "hk-dedup",
        insert: `('huge-dedup-key-' || repeat('d', 150000), 'search_click', 'hk-dedup', '{}', '{}', NULL, NULL)`,
      },
    ]
    const isHostile = (dedupKey: string) => dedupKey.startsWith("huge-")
    await write(st, background("before", 250))
    for (const h of hostile) {
      await st.db.run((sql) =>
        sql.unsafe(`INSERT INTO outbox_event (dedup_key, event_type, aggregate_key, payload, headers, request_id, traceparent)
                      VALUES ${h.insert}`),
      )
    }
    // Later events of the hostile rows' keys (but the 150 kB one, whose rows would all be too large).
    const hostileKeys = ["hk-request", "hk-trace", "hk-headers", "hk-type", "hk-dedup"]
    await write(st, [...hostileKeys.flatMap((k) => followers(k, 5)), ...background("after", 230)])
    // PostgreSQL itself refuses what no index can hold: a 17 MiB key never reaches the table.
    for (const column of ["aggregate_key", "dedup_key"]) {
      const refused = await st.db
        .run((sql) =>
          sql.unsafe(
            `INSERT INTO outbox_event (dedup_key, event_type, aggregate_key, payload) VALUES (${
              column === "dedup_key" ? `repeat('d', ${MiB17})` : "'huge-never'"
            }, 'search_click', ${column === "aggregate_key" ? `repeat('k', ${MiB17})` : "'k'"}, '{}')`,
          ),
        )
        .then(
          () => "inserted",
          (e: unknown) => String(e),
        )
      expect(refused, column).not.toBe("inserted")
    }

    const started = Date.now()
    // LEASE_MS 10 s: printing a 17 MiB jsonb to measure it takes over a second on this busy 2-core
    // machine, and a claim that outlasts LEASE_MS - 2 × PUBLISH_TIMEOUT_MS (1 s with the fast
    // settings) is given back whole, every time (see the report on issue 18).
    const relay = s.startRelay("fault-huge-columns", { ...st.relayEnv, MAX_RECORD_BYTES: "100000", LEASE_MS: "10000" })
    await waitDrained(st.db, { sinceMs: started, timeoutMs: 90_000 })

    const { rows, messages } = await settleNormal(s, st, isHostile)
    const dead = rows.filter((r) => isHostile(r.dedup_key))
    expect(dead.map((r, i) => [r.dedup_key.slice(0, hostile[i]?.label.length), r.status, r.dead_reason])).toEqual(
      hostile.map((h) => [h.label, "DEAD", h.column === "event_type" ? "unmarkable" : "message_too_large"]),
    )
    const letters = messages.filter((m: KafkaMessage) => m.topic === st.topics.dlq)
    for (const [i, h] of hostile.entries()) {
      if (h.column === "event_type") expect(dead[i]!.last_error, h.label).toContain("SQLSTATE 54000")
      else expect(dead[i]!.last_error, h.label).toContain(`its largest column is ${h.column}`)
      const letter = letters.filter((m) => m.headers["dlq.oversize_column"] === h.column)
      expect(letter, h.label).toHaveLength(1)
      expect(letter[0]!.value).toBeNull()
      expect(letter[0]!.headers["dlq.reason"]).toBe("message_too_large")
      expect(Number(letter[0]!.headers["dlq.size_bytes"])).toBeGreaterThan(100_000)
      // The huge column itself never crossed the wire: only a stand-in, in the letter too.
      for (const value of Object.values(letter[0]!.headers)) expect(value.length).toBeLessThan(2_000)
    }
    expect(rows.filter((r) => !isHostile(r.dedup_key)).every((r) => r.status === "SENT")).toBe(true)
    // A hostile row's key went on only after its dead letter was on the DLQ.
    for (const key of hostileKeys) {
      const letter = letters.find((m) => m.key === key)
      expect(letter, key).toBeDefined()
      for (const f of followers(key, 5)) {
        const arrival = messages.find((m) => m.headers.dedup_key === f.dedupKey)
        expect(arrival!.timestamp, f.dedupKey).toBeGreaterThanOrEqual(letter!.timestamp)
      }
    }
    expect(relay.logs.filter((l) => JSON.stringify(l).includes("maxMessageSize"))).toEqual([])
    expect(relay.linesWith("relay loop failed")).toEqual([])
  })

  it("migrating a table whose pending rows break a bound settles them DEAD out_of_limits, and the relay drains the rest", async () => {
    const s = new Scenario("migrate bad rows")
    const st = await stage(s, { label: "migrate-bad", mappedTypes: ["search_click", "ac_select"] })
    // The table as it was before migration 7, holding what the relay could not carry.
    await dropRowLimits(st.db)
    await st.db.run((sql) => sql`DELETE FROM outbox_relay_schema WHERE version = 7`)
    await write(st, background("before", 250))
    await st.db.run((sql) =>
      sql.unsafe(`INSERT INTO outbox_event (dedup_key, event_type, aggregate_key, payload, headers, request_id, attempts, next_attempt_at, status)
                    VALUES ('bad-event-type', repeat('t', 10000), 'bad-1', '{}', '{}', NULL, 0, now(), 'NEW'),
                           ('bad-attempts', 'search_click', 'bad-2', '{}', '{}', NULL, 2147483647, now(), 'FAILED'),
                           ('bad-next-attempt', 'search_click', 'bad-3', '{}', '{}', NULL, 0, 'infinity', 'NEW'),
                           ('bad-headers', 'search_click', 'bad-4', '{}', '{"n": 1}', NULL, 0, now(), 'NEW'),
                           ('bad-request-id', 'search_click', 'bad-5', '{}', '{}', repeat('r', ${MiB17}), 0, now(), 'NEW')`),
    )
    const badKeys = ["bad-1", "bad-2", "bad-3", "bad-4", "bad-5"]
    await write(st, [...badKeys.flatMap((k) => followers(k, 10)), ...background("after", 250)])
    await migrateWithCli(st.db.url)

    const started = Date.now()
    const relay = s.startRelay("fault-migrate-bad", st.relayEnv)
    await waitDrained(st.db, { sinceMs: started, timeoutMs: 60_000 })

    const isBad = (dedupKey: string) => dedupKey.startsWith("bad-") && !dedupKey.includes("follower")
    const { rows } = await settleNormal(s, st, isBad)
    const bad = rows.filter((r) => isBad(r.dedup_key))
    expect(bad.map((r) => [r.dedup_key, r.status, r.dead_reason])).toEqual(
      ["bad-event-type", "bad-attempts", "bad-next-attempt", "bad-headers", "bad-request-id"].map((k) => [k, "DEAD", "out_of_limits"]),
    )
    expect(bad.map((r) => r.last_error?.split(" when ")[0])).toEqual([
      "broke outbox_event_event_type_bytes",
      "broke outbox_event_attempts_range",
      "broke outbox_event_next_attempt_finite",
      "broke outbox_event_headers_strings",
      "broke outbox_event_request_id_bytes",
    ])
    // The rows behind them, of their keys, went on once they were settled.
    for (const key of badKeys) {
      expect(rows.filter((r) => r.aggregate_key === key && r.dedup_key.includes("follower")).map((r) => r.status)).toEqual(
        Array(10).fill("SENT"),
      )
    }
    expect(relay.linesWith("relay loop failed")).toEqual([])
  })
})
