/**
 * Scenario 6: poison events mid-stream. An unknown event_type and a payload larger than
 * the broker's message.max.bytes (≈1 MB; this one is ≈1.5 MB) go to the dead-letter topic
 * at once, with their reason in the headers, while every other event flows; a key whose
 * head event was dead-lettered resumes with its later events.
 */
import { describe, expect, it } from "vitest"
import type { EventSpec } from "../support/fault/event-writer.ts"
import { readOutbox, waitDrained } from "../support/fault/fault-db.ts"
import { readAll } from "../support/fault/kafka-readback.ts"
import { expectEveryEventAccountedFor, printReport } from "../support/fault/ledger.ts"
import { sleep } from "../support/fault/processes.ts"
import { Scenario, type Stage, settle, stage } from "../support/fault/scenario.ts"

const follower = (key: string, i: number): EventSpec => ({
  dedupKey: `poison-follower-${key}-${i}`,
  eventType: "search_click",
  aggregateKey: key,
  payload: { after: "poison", i },
})

describe("poison events", () => {
  it("dead-letters an unknown event_type and a 1.5 MB payload at once, with reasons, while the rest flows and their keys resume", async () => {
    const s = new Scenario("poison events")
    const st = await stage(s, { label: "poison" })
    const relay = s.startRelay("fault-poison", st.relayEnv)
    await relay.ready()
    st.writer.start()
    await st.writer.waitForCount(300)

    const poison: ReadonlyArray<EventSpec> = [
      { dedupKey: "poison-unknown-type", eventType: "order_refunded", aggregateKey: "poisoned-a", payload: { refund: 42 } },
      { dedupKey: "poison-unknown-type-unkeyed", eventType: "order_refunded", aggregateKey: null, payload: { refund: 7 } },
      {
        dedupKey: "poison-too-large",
        eventType: "search_impression",
        aggregateKey: "poisoned-b",
        payload: { blob: "x".repeat(1_500_000) },
      },
    ]
    st.writer.inject(poison)
    const injectedAt = Date.now()
    // Later events of the poisoned keys, written while the poison is being handled.
    for (let i = 0; i < 5; i++) {
      await sleep(150)
      st.writer.inject([follower("poisoned-a", i), follower("poisoned-b", i)])
    }
    const deadAt = await waitUntilDead(st, poison.length, 20_000)
    await sleep(1_500)
    await st.writer.stop()
    await waitDrained(st.db, { sinceMs: injectedAt, timeoutMs: 30_000 })

    const ledger = await settle(st)
    const rows = await readOutbox(st.db)
    const letters = (await readAll(st.brokers, [st.topics.dlq])).filter((m) => m.headers.dedup_key?.startsWith("poison-"))
    printReport({
      scenario: s.name,
      ledger,
      wallSeconds: s.elapsedSeconds(),
      extra: { dead_letters: letters.length, poison_dead_after_s: ((deadAt - injectedAt) / 1000).toFixed(2) },
    })

    expectEveryEventAccountedFor(ledger)
    const dead = rows.filter((r) => r.status === "DEAD")
    expect(dead.map((r) => [r.dedup_key, r.dead_reason, r.attempts])).toEqual([
      ["poison-unknown-type", "unknown_event_type", 1],
      ["poison-unknown-type-unkeyed", "unknown_event_type", 1],
      ["poison-too-large", "message_too_large", 1],
    ])
    // At once: first attempt, within seconds, not after a retry schedule.
    expect(deadAt - injectedAt).toBeLessThan(10_000)

    const letter = (key: string) => {
      const found = letters.filter((m) => m.headers.dedup_key === key)
      expect(found, `one dead letter for ${key}`).toHaveLength(1)
      return found[0]!
    }
    const unknown = letter("poison-unknown-type")
    expect(unknown.key).toBe("poisoned-a")
    expect(JSON.parse(unknown.value!)).toEqual({ refund: 42 })
    expect(unknown.headers).toMatchObject({
      "dlq.reason": "unknown_event_type",
      "dlq.attempts": "1",
      "dlq.original_topic": "",
      event_type: "order_refunded",
    })
    expect(unknown.headers["dlq.error"]).toContain("order_refunded")
    expect(Number.isNaN(Date.parse(unknown.headers["dlq.failed_at"] ?? ""))).toBe(false)
    expect(letter("poison-unknown-type-unkeyed").key).toBe("poison-unknown-type-unkeyed")

    // Too large for its topic is too large for the dead-letter topic too: sent without the value, flagged; the row keeps it.
    const large = letter("poison-too-large")
    expect(large.key).toBe("poisoned-b")
    expect(large.value).toBeNull()
    expect(large.headers).toMatchObject({
      "dlq.reason": "message_too_large",
      "dlq.value_omitted": "true",
      "dlq.original_topic": st.topics.map.search_impression,
      event_type: "search_impression",
    })

    // The poisoned keys resumed: every later event of theirs is SENT.
    for (const key of ["poisoned-a", "poisoned-b"]) {
      const followers = rows.filter((r) => r.aggregate_key === key && r.dedup_key.startsWith("poison-follower-"))
      expect(followers.map((r) => r.status)).toEqual(Array(5).fill("SENT"))
    }
    // Each dead letter raised an ops signal naming the event and the reason.
    const tickets = relay.linesWith("event dead-lettered").filter((l) => l.ops_ticket === true)
    expect(tickets.map((l) => [l.dedup_key, l.reason]).sort()).toEqual(dead.map((r) => [r.dedup_key, r.dead_reason]).sort())
    expect(relay.running).toBe(true)
  }, 120_000)
})

const waitUntilDead = async (st: Stage, n: number, timeoutMs: number) => {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const [row] = await st.db.run((sql) => sql<{ n: number }>`SELECT count(*)::int AS n FROM outbox_event WHERE status = 'DEAD'`)
    if ((row?.n ?? 0) >= n) return Date.now()
    if (Date.now() > deadline) throw new Error(`only ${row?.n ?? 0} of ${n} poison events DEAD after ${timeoutMs} ms`)
    await sleep(50)
  }
}
