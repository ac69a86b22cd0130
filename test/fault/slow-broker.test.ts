/**
 * A slow but live broker means slower progress, never takeovers. The broker answers every
 * request 150 ms late (a proxy in front of it), the lease is 3 s, and one event in ten is a
 * poison whose full dead letter the dead-letter topic refuses, so a batch makes many sends
 * (the letters at once, then each alone, full then trimmed). Each send is bounded by
 * PUBLISH_TIMEOUT_MS; their total is bounded by the batch's lease, which it renews while it
 * publishes. Two instances drain the table with no takeover and no duplicate.
 */
import { describe, expect, it } from "vitest"
import { type EventSpec, insertEvents } from "../support/fault/event-writer.ts"
import { readOutbox, waitDrained } from "../support/fault/fault-db.ts"
import { limitTopic } from "../support/fault/kafka-readback.ts"
import { expectEveryEventAccountedFor, printReport } from "../support/fault/ledger.ts"
import { FAST_RELAY_ENV } from "../support/fault/relay-process.ts"
import { brokerBehindProxy, Scenario, settle, stage } from "../support/fault/scenario.ts"

// The probe drained 3,000; CI drains fewer (each batch takes seconds here by design).
const ROWS = Number(process.env.FAULT_SLOW_BROKER_ROWS ?? 400)

const events = (n: number): ReadonlyArray<EventSpec> =>
  Array.from({ length: n }, (_, i) =>
    i % 10 === 5
      ? // Unknown type with a 2 kB payload: its full dead letter is over the DLQ's 1,500 bytes.
        { dedupKey: `slow-poison-${i}`, eventType: "order_refunded", aggregateKey: `slow-${i % 30}`, payload: { blob: "p".repeat(2_000) } }
      : { dedupKey: `slow-${i}`, eventType: i % 2 === 0 ? "search_click" : "ac_select", aggregateKey: `slow-${i % 30}`, payload: { i } },
  )

describe("fault: a slow broker", () => {
  it("drains with two instances behind a broker that answers 150 ms late: no takeover, no duplicate", async () => {
    const s = new Scenario("slow broker (delay proxy)")
    const { proxy, broker } = await brokerBehindProxy(s)
    const st = await stage(s, { label: "slow", brokers: broker.bootstrap, mappedTypes: ["search_click", "ac_select"] })
    await limitTopic(st.brokers, st.topics.dlq, 1_500)
    const written = events(ROWS)
    for (let i = 0; i < written.length; i += 500) await insertEvents(st.db, written.slice(i, i + 500))
    st.writer.written.push(...written)
    proxy.responseDelayMs = 150

    const env = { ...st.relayEnv, ...FAST_RELAY_ENV, LEASE_MS: "3000", PUBLISH_TIMEOUT_MS: "1000", BATCH_SIZE: "100" }
    const relays = [s.startRelay("fault-slow-a", env), s.startRelay("fault-slow-b", env)]
    await waitDrained(st.db, { sinceMs: Date.now(), timeoutMs: 240_000 })

    const ledger = await settle(st)
    printReport({
      scenario: s.name,
      ledger,
      wallSeconds: s.elapsedSeconds(),
      extra: { rows: ROWS, producer_recreated: relays.map((r) => r.linesWith("Kafka producer recreated").length).join("/") },
    })
    expectEveryEventAccountedFor(ledger)
    expect(ledger.duplicates).toBe(0)
    expect(ledger.deadLetterDuplicates).toBe(0)
    for (const relay of relays) {
      expect(relay.linesWith("took over rows"), relay.name).toEqual([])
      expect(relay.linesWith("lease lost before marking"), relay.name).toEqual([])
    }
    const dead = (await readOutbox(st.db)).filter((r) => r.status === "DEAD")
    expect(dead.length).toBe(ROWS / 10)
    expect(new Set(dead.map((r) => r.dead_reason))).toEqual(new Set(["unknown_event_type"]))
  }, 300_000)
})
