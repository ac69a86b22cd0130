/**
 * Scenario 8: bad input, mid-stream. Each gets a clear answer and nothing is lost:
 * - an invalid traceparent: the event is published without it, with a warning;
 * - a JSON null payload: valid jsonb, published as the JSON text `null` (never a Kafka
 *   tombstone, which would delete the key on a compacted topic);
 * - headers that cannot be Kafka headers: dead-lettered at once (invalid_record), the key resumes;
 * - an empty dedup_key or an SQL NULL payload: the INSERT fails on the table's constraint
 *   and none of its rows is written;
 * - invalid JSON (or topic names) in TOPIC_MAP / DLQ_TOPIC: the relay exits 2 naming the variable.
 */
import { describe, expect, it } from "vitest"
import { sqlErrorMessage } from "../../src/outbox/sql-error.ts"
import type { EventSpec } from "../support/fault/event-writer.ts"
import { type Db, readOutbox, waitDrained } from "../support/fault/fault-db.ts"
import { readAll } from "../support/fault/kafka-readback.ts"
import { expectEveryEventAccountedFor, printReport } from "../support/fault/ledger.ts"
import { outboxRelay, sleep } from "../support/fault/processes.ts"
import { Scenario, settle, stage } from "../support/fault/scenario.ts"

const VALID_TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

/** The PostgreSQL error a statement fails with (message and SQLSTATE), or undefined if it succeeded. */
const rejection = async (db: Db, statement: string): Promise<{ message: string; code: string } | undefined> => {
  try {
    await db.run((sql) => sql.unsafe(statement))
    return undefined
  } catch (e) {
    let code = ""
    for (let c: unknown = e, depth = 0; typeof c === "object" && c !== null && depth < 6; depth++) {
      const o = c as { code?: unknown; reason?: unknown; cause?: unknown }
      if (typeof o.code === "string") code = o.code
      c = o.reason ?? o.cause
    }
    return { message: sqlErrorMessage(e as Parameters<typeof sqlErrorMessage>[0]), code }
  }
}

const rowsWithKeys = async (db: Db, keys: ReadonlyArray<string>) => {
  const rows = await db.run((sql) => sql<{ dedup_key: string }>`SELECT dedup_key FROM outbox_event WHERE dedup_key = ANY(${keys}::text[])`)
  return rows.map((r) => r.dedup_key)
}

describe("bad input", () => {
  it("answers each kind of bad input clearly and loses no event around it", async () => {
    const s = new Scenario("bad input")
    const st = await stage(s, { label: "bad" })
    const relay = s.startRelay("fault-bad", st.relayEnv)
    await relay.ready()
    st.writer.start()
    await st.writer.waitForCount(300)

    const odd: ReadonlyArray<EventSpec> = [
      {
        dedupKey: "bad-traceparent-garbage",
        eventType: "search_click",
        aggregateKey: "key-3",
        payload: { t: 1 },
        traceparent: "not-a-traceparent",
      },
      {
        dedupKey: "bad-traceparent-zero-trace",
        eventType: "search_click",
        aggregateKey: "key-3",
        payload: { t: 2 },
        traceparent: `00-${"0".repeat(32)}-${"0".repeat(15)}1-01`,
      },
      { dedupKey: "good-traceparent", eventType: "search_click", aggregateKey: "key-3", payload: { t: 3 }, traceparent: VALID_TRACEPARENT },
      { dedupKey: "null-payload", eventType: "ac_select", aggregateKey: "key-4", payload: null },
    ]
    st.writer.inject(odd)
    const injectedAt = Date.now()

    // Rejected by the table: the statement fails as a whole, none of its rows is written.
    const emptyKey = await rejection(
      st.db,
      `INSERT INTO outbox_event (dedup_key, event_type, payload) VALUES
         ('reject-1a', 'search_click', '{}'), ('', 'search_click', '{}'), ('reject-1c', 'search_click', '{}')`,
    )
    expect(emptyKey).toEqual({ code: "23514", message: expect.stringContaining("outbox_event_dedup_key_check") })
    const blankKey = await rejection(
      st.db,
      `INSERT INTO outbox_event (dedup_key, event_type, payload) VALUES ('   ', 'search_click', '{}')`,
    )
    expect(blankKey?.code).toBe("23514")
    const sqlNull = await rejection(
      st.db,
      `INSERT INTO outbox_event (dedup_key, event_type, payload) VALUES ('reject-2a', 'search_click', '{}'), ('reject-2b', 'search_click', NULL)`,
    )
    expect(sqlNull).toEqual({ code: "23502", message: expect.stringContaining('"payload"') })
    // Headers that cannot be Kafka headers: refused by the table's bound (migration 7), by name.
    const badHeaders = await rejection(
      st.db,
      `INSERT INTO outbox_event (dedup_key, event_type, aggregate_key, payload, headers)
       VALUES ('bad-headers', 'search_click', 'key-6', '{"h": 1}', '{"nested": {"not": "a string"}}')`,
    )
    expect(badHeaders).toEqual({ code: "23514", message: expect.stringContaining("outbox_event_headers_strings") })
    expect(await rowsWithKeys(st.db, ["reject-1a", "reject-1c", "reject-2a", "reject-2b", "bad-headers"])).toEqual([])

    // Bad configuration: named, exit 2, nothing started.
    for (const [variable, value, says] of [
      ["TOPIC_MAP", "{bad", "must be a JSON object"],
      ["TOPIC_MAP", '{"search_click":"not a topic!"}', "invalid entries"],
      ["TOPIC_MAP", '["search_click"]', "must be a JSON object"],
      ["DLQ_TOPIC", "dead letters", "must be a Kafka topic name"],
    ] as const) {
      const run = await outboxRelay(["run"], { ...st.relayEnv, [variable]: value }, 20_000)
      expect(run.code, `${variable}=${value}: ${run.output}`).toBe(2)
      expect(run.output).toContain(variable)
      expect(run.output).toContain(says)
      expect(run.output).not.toContain("relay started")
    }

    await sleep(1_000)
    await st.writer.stop()
    await waitDrained(st.db, { sinceMs: injectedAt, timeoutMs: 30_000 })
    const ledger = await settle(st)
    const rows = await readOutbox(st.db)
    const messages = await readAll(st.brokers, st.topics.all)
    printReport({ scenario: s.name, ledger, wallSeconds: s.elapsedSeconds() })

    expectEveryEventAccountedFor(ledger)
    const byKey = (k: string) => {
      const found = messages.filter((m) => m.headers.dedup_key === k)
      expect(found.length, `${k} on Kafka`).toBeGreaterThan(0)
      return found[0]!
    }
    // Invalid traceparents are dropped, with a warning naming the event; a valid one is kept.
    for (const k of ["bad-traceparent-garbage", "bad-traceparent-zero-trace"]) {
      expect(byKey(k).headers.traceparent).toBeUndefined()
      expect(relay.linesWith("invalid traceparent dropped").some((l) => l.dedup_key === k)).toBe(true)
    }
    expect(byKey("good-traceparent").headers.traceparent).toBe(VALID_TRACEPARENT)
    // JSON null: stored as jsonb null, published as the text "null", not as a tombstone.
    expect(byKey("null-payload").value).toBe("null")
    // Nothing else was dead: every bad row was refused at INSERT or published.
    expect(rows.filter((r) => r.status === "DEAD")).toEqual([])
    expect(relay.running).toBe(true)
  }, 120_000)
})
