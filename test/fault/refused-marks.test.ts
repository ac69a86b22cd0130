/**
 * A statement PostgreSQL refuses costs only its row. Rows that predate the table's limits
 * (migration 7 adds them NOT VALID, and a DBA may drop one) can make a mark fail with a data
 * error: a 10 kB event_type overflows the dead-letter index, attempts at the integer limit
 * overflow `attempts + 1`. Against the real relay, PostgreSQL and Kafka: the refused row is
 * settled DEAD `unmarkable`, its siblings in the same batch are marked, nothing is re-sent and
 * nothing is taken over.
 */
import { describe, expect, it } from "vitest"
import { type EventSpec, insertEvents } from "../support/fault/event-writer.ts"
import { readOutbox, waitDrained } from "../support/fault/fault-db.ts"
import { readAll } from "../support/fault/kafka-readback.ts"
import { expectEveryEventAccountedFor, printReport } from "../support/fault/ledger.ts"
import { FAST_RELAY_ENV } from "../support/fault/relay-process.ts"
import { Scenario, type Stage, settle, stage } from "../support/fault/scenario.ts"

const background = (prefix: string, n: number): ReadonlyArray<EventSpec> =>
  Array.from({ length: n }, (_, i) => ({
    dedupKey: `${prefix}-${i}`,
    eventType: i % 2 === 0 ? "search_click" : "ac_select",
    aggregateKey: `bg-${i % 25}`,
    payload: { i },
  }))

const write = async (st: Stage, events: ReadonlyArray<EventSpec>) => {
  await insertEvents(st.db, events)
  st.writer.written.push(...events)
}

/** The table as it was before its limits, or after a DBA dropped them. */
const dropLimit = (st: Stage, constraint: string) =>
  st.db.run((sql) => sql`ALTER TABLE outbox_event DROP CONSTRAINT IF EXISTS ${sql(constraint)}`)

describe("marks PostgreSQL refuses", () => {
  it("settles a row whose DEAD mark overflows an index as unmarkable, marks its batch, and re-sends nothing", async () => {
    const s = new Scenario("refused mark: 10 kB event_type")
    const st = await stage(s, { label: "refused-mark", mappedTypes: ["search_click", "ac_select"] })
    await dropLimit(st, "outbox_event_event_type_bytes")
    await write(st, background("before", 250))
    await st.db.run(
      (sql) => sql`
        INSERT INTO outbox_event (dedup_key, event_type, aggregate_key, payload)
        -- Random hex: it does not compress below the ~2.7 kB a btree entry may take.
        VALUES ('huge-type', (SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 320)), 'bg-3', '{"n": 1}')`,
    )
    st.writer.written.push({ dedupKey: "huge-type", eventType: "(10 kB of hex)", aggregateKey: "bg-3", payload: { n: 1 } })
    await write(st, background("after", 250))

    // A short lease: before, the refused batch came back every lease and was sent again.
    const relay = s.startRelay("fault-refused-mark", { ...st.relayEnv, ...FAST_RELAY_ENV, LEASE_MS: "8000", PUBLISH_TIMEOUT_MS: "2000" })
    await waitDrained(st.db, { sinceMs: Date.now(), timeoutMs: 90_000 })

    const ledger = await settle(st)
    printReport({ scenario: s.name, ledger, wallSeconds: s.elapsedSeconds() })
    expectEveryEventAccountedFor(ledger)
    expect(ledger.duplicates).toBe(0)
    expect(ledger.deadLetterDuplicates).toBe(0)
    const rows = await readOutbox(st.db)
    const dead = rows.filter((r) => r.status === "DEAD")
    expect(dead.map((r) => [r.dedup_key, r.dead_reason])).toEqual([["huge-type", "unmarkable"]])
    expect(dead[0]!.last_error).toContain("SQLSTATE 54000")
    // Brought within the table's limits, so the dead-letter index could take it.
    expect(dead[0]!.event_type.length).toBeLessThanOrEqual(255)
    const letters = (await readAll(st.brokers, [st.topics.dlq])).filter((m) => m.headers.dedup_key === "huge-type")
    expect(letters.map((m) => m.headers["dlq.reason"])).toEqual(["unknown_event_type"])
    expect(relay.linesWith("took over rows")).toEqual([])
    expect(relay.linesWith("relay loop failed")).toEqual([])
    expect(relay.linesWith("PostgreSQL refused a row's mark").map((l) => l.sqlstate)).toEqual(["54000"])
  })

  it("settles a row whose attempts are at the integer limit as unmarkable, and the rest of its key goes on", async () => {
    const s = new Scenario("refused mark: attempts at the integer limit")
    const st = await stage(s, { label: "int-limit", mappedTypes: ["search_click", "ac_select"] })
    await dropLimit(st, "outbox_event_attempts_range")
    await write(st, background("before", 200))
    await st.db.run(
      (sql) => sql`
        INSERT INTO outbox_event (dedup_key, event_type, aggregate_key, payload, status, attempts)
        VALUES ('max-attempts', 'search_click', 'bg-7', '{"n": 1}', 'FAILED', 2147483647)`,
    )
    st.writer.written.push({ dedupKey: "max-attempts", eventType: "search_click", aggregateKey: "bg-7", payload: { n: 1 } })
    await write(st, background("after", 200))

    const relay = s.startRelay("fault-int-limit", { ...st.relayEnv, ...FAST_RELAY_ENV, LEASE_MS: "8000", PUBLISH_TIMEOUT_MS: "2000" })
    await waitDrained(st.db, { sinceMs: Date.now(), timeoutMs: 90_000 })

    const ledger = await settle(st)
    printReport({ scenario: s.name, ledger, wallSeconds: s.elapsedSeconds() })
    expectEveryEventAccountedFor(ledger)
    expect(ledger.duplicates).toBe(0)
    const rows = await readOutbox(st.db)
    const dead = rows.filter((r) => r.status === "DEAD")
    expect(dead.map((r) => [r.dedup_key, r.dead_reason])).toEqual([["max-attempts", "unmarkable"]])
    expect(dead[0]!.last_error).toContain("SQLSTATE 22003")
    expect(dead[0]!.attempts).toBeLessThanOrEqual(1_000_000)
    // Its key's later events waited for it, then went out.
    expect(rows.filter((r) => r.aggregate_key === "bg-7" && r.dedup_key !== "max-attempts").every((r) => r.status === "SENT")).toBe(true)
    expect(relay.linesWith("took over rows")).toEqual([])
  })
})
