/**
 * Poison rows against the real relay process, PostgreSQL and Kafka: rows too large to read,
 * records the broker refuses, dead letters the dead-letter topic refuses, and a topic that
 * does not exist. Each ends in a state of its own (DEAD with a reason, or SENT), costs only
 * itself, and holds back only the later events of its own key, for as long as it is unsent.
 */
import { describe, expect, it } from "vitest"
import { type EventSpec, insertEvents } from "../support/fault/event-writer.ts"
import { readOutbox, waitDrained } from "../support/fault/fault-db.ts"
import { type KafkaMessage, limitTopic, readAll } from "../support/fault/kafka-readback.ts"
import { expectEveryEventAccountedFor, printReport } from "../support/fault/ledger.ts"
import { Scenario, type Stage, settle, stage } from "../support/fault/scenario.ts"

const followers = (key: string, n: number, eventType = "search_click"): ReadonlyArray<EventSpec> =>
  Array.from({ length: n }, (_, i) => ({ dedupKey: `${key}-follower-${i}`, eventType, aggregateKey: key, payload: { after: key, i } }))

const background = (prefix: string, n: number): ReadonlyArray<EventSpec> =>
  Array.from({ length: n }, (_, i) => ({
    dedupKey: `${prefix}-${i}`,
    eventType: i % 2 === 0 ? "search_click" : "ac_select",
    aggregateKey: i % 9 === 0 ? null : `bg-${i % 40}`,
    payload: { i },
  }))

/** Inserts in chunks, the way services would, in id order. */
const write = async (st: Stage, events: ReadonlyArray<EventSpec>) => {
  for (let i = 0; i < events.length; i += 500) await insertEvents(st.db, events.slice(i, i + 500))
  st.writer.written.push(...events)
}

/** The first arrival of an event on any topic, by producer timestamp. */
const firstArrival = (messages: ReadonlyArray<KafkaMessage>, dedupKey: string) =>
  Math.min(...messages.filter((m) => m.headers.dedup_key === dedupKey).map((m) => m.timestamp))

describe("poison rows", () => {
  it("dead-letters a 17 MiB row as message_too_large without reading it, while 2,000 others flow", async () => {
    const s = new Scenario("17 MiB row")
    const st = await stage(s, { label: "huge-row", mappedTypes: ["search_click", "ac_select"] })
    await write(st, background("huge-before", 1_000))
    await st.db.run(
      (sql) => sql`
        INSERT INTO outbox_event (dedup_key, event_type, aggregate_key, payload)
        VALUES ('huge-row', 'search_click', 'huge-key', jsonb_build_object('blob', repeat('x', 17 * 1024 * 1024)))`,
    )
    st.writer.written.push({ dedupKey: "huge-row", eventType: "search_click", aggregateKey: "huge-key", payload: null })
    await write(st, [...followers("huge-key", 5), ...background("huge-after", 1_000)])
    const started = Date.now()
    const relay = s.startRelay("fault-huge-row", st.relayEnv)
    await waitDrained(st.db, { sinceMs: started, timeoutMs: 60_000 })

    const ledger = await settle(st)
    printReport({ scenario: s.name, ledger, wallSeconds: s.elapsedSeconds() })
    expectEveryEventAccountedFor(ledger)
    const rows = await readOutbox(st.db)
    expect(rows.filter((r) => r.status === "DEAD").map((r) => [r.dedup_key, r.dead_reason, r.attempts])).toEqual([
      ["huge-row", "message_too_large", 1],
    ])
    const [letter] = (await readAll(st.brokers, [st.topics.dlq])).filter((m) => m.headers.dedup_key === "huge-row")
    expect(letter?.value).toBeNull()
    expect(Number(letter?.headers["dlq.size_bytes"])).toBeGreaterThan(17 * 1024 * 1024)
    expect(letter?.headers["dlq.value_omitted"]).toBe("true")
    // The payload never crossed the wire: no claim failed on the client's 16 MiB limit.
    expect(relay.logs.filter((l) => JSON.stringify(l).includes("maxMessageSize"))).toEqual([])
    expect(relay.linesWith("relay loop failed")).toEqual([])
  })

  it("costs a 2 MB row among 5,000 only itself: no duplicate, no new producer, no pause in claiming", async () => {
    const s = new Scenario("2 MB row")
    const st = await stage(s, { label: "large-row", mappedTypes: ["search_click", "ac_select"] })
    const relay = s.startRelay("fault-large-row", st.relayEnv)
    await relay.ready()
    await write(st, background("large-before", 2_500))
    await write(st, [
      { dedupKey: "large-row", eventType: "search_click", aggregateKey: "large-key", payload: { blob: "y".repeat(2_000_000) } },
      ...followers("large-key", 20),
      ...background("large-after", 2_500),
    ])
    await waitDrained(st.db, { sinceMs: Date.now(), timeoutMs: 60_000 })

    const ledger = await settle(st)
    printReport({ scenario: s.name, ledger, wallSeconds: s.elapsedSeconds() })
    expectEveryEventAccountedFor(ledger)
    expect(ledger.duplicates).toBe(0)
    const rows = await readOutbox(st.db)
    expect(rows.filter((r) => r.status === "DEAD").map((r) => [r.dedup_key, r.dead_reason, r.attempts])).toEqual([
      ["large-row", "message_too_large", 1],
    ])
    expect(relay.linesWith("Kafka producer recreated")).toEqual([])
    expect(relay.linesWith("Kafka unreachable")).toEqual([])
    expect(relay.linesWith("Kafka rejected a batch")).toEqual([])
    const messages = await readAll(st.brokers, st.topics.all)
    const deadAt = firstArrival(messages, "large-row")
    for (const f of followers("large-key", 20)) expect(firstArrival(messages, f.dedupKey)).toBeGreaterThanOrEqual(deadAt)
  })

  it("sends a dead letter trimmed when the dead-letter topic refuses it whole, and marks it dlq_rejected when it refuses that too", async () => {
    const s = new Scenario("dead letter refused")
    const st = await stage(s, { label: "dlq-refuses", mappedTypes: ["search_click", "ac_select"] })
    await limitTopic(st.brokers, st.topics.dlq, 1_000)
    // Under MAX_RECORD_BYTES, over this topic's limit: the broker itself refuses the record.
    await limitTopic(st.brokers, st.topics.map.search_click!, 20_000)
    const relay = s.startRelay("fault-dlq-refuses", { ...st.relayEnv, MAX_ATTEMPTS: "3" })
    await relay.ready()
    await write(st, [
      // Refused by its topic, with headers too big for the dead-letter topic: goes there trimmed.
      {
        dedupKey: "dlq-trimmed",
        eventType: "search_click",
        aggregateKey: "dlq-key-a",
        payload: { n: 1 },
        headers: { big: "h".repeat(50_000) },
      },
      ...followers("dlq-key-a", 20),
      ...background("dlq-bg", 500),
    ])
    // Unknown type whose relay headers alone are over the limit: even the trimmed letter is
    // refused. Its columns stay within the table's bounds (event_type 255, request_id 256 bytes),
    // so it is carried, and only the dead-letter topic's limit is in the way.
    await st.db.run(
      (sql) => sql`
        INSERT INTO outbox_event (dedup_key, event_type, aggregate_key, payload, request_id)
        VALUES ('dlq-refused', 'order_refunded_' || repeat('x', 240), 'dlq-key-b', '{"n": 2}', repeat('r', 256))`,
    )
    st.writer.written.push({
      dedupKey: "dlq-refused",
      eventType: `order_refunded_${"x".repeat(240)}`,
      aggregateKey: "dlq-key-b",
      payload: { n: 2 },
    })
    await write(st, followers("dlq-key-b", 20))
    await waitDrained(st.db, { sinceMs: Date.now(), timeoutMs: 60_000 })

    const rows = await readOutbox(st.db)
    const dead = rows.filter((r) => r.status === "DEAD")
    expect(dead.map((r) => [r.dedup_key, r.dead_reason, r.attempts])).toEqual([
      ["dlq-trimmed", "message_too_large", 1],
      ["dlq-refused", "dlq_rejected", 1],
    ])
    expect(dead[1]!.last_error).toContain("unknown_event_type")
    const messages = await readAll(st.brokers, st.topics.all)
    const trimmed = messages.filter((m) => m.topic === st.topics.dlq && m.headers.dedup_key === "dlq-trimmed")
    expect(trimmed).toHaveLength(1)
    expect(trimmed[0]!.headers).toMatchObject({ "dlq.reason": "message_too_large", "dlq.headers_omitted": "true" })
    expect(trimmed[0]!.headers.big).toBeUndefined()
    expect(messages.filter((m) => m.headers.dedup_key === "dlq-refused")).toEqual([])
    // Both keys resumed; key a only after its dead letter was on the DLQ (the refused record
    // itself never landed, so the dead letter is its first appearance).
    for (const key of ["dlq-key-a", "dlq-key-b"]) {
      expect(rows.filter((r) => r.aggregate_key === key && r.dedup_key.includes("follower")).map((r) => r.status)).toEqual(
        Array(20).fill("SENT"),
      )
    }
    for (const f of followers("dlq-key-a", 20)) expect(firstArrival(messages, f.dedupKey)).toBeGreaterThanOrEqual(trimmed[0]!.timestamp)
    // The operator is told, and no route retried or paused claiming as if Kafka were down.
    const tickets = relay.linesWith("event dead-lettered").filter((l) => l.ops_ticket === true)
    expect(tickets.map((l) => [l.dedup_key, l.reason]).sort()).toEqual([
      ["dlq-refused", "dlq_rejected"],
      ["dlq-trimmed", "message_too_large"],
    ])
    expect(relay.linesWith("Kafka unreachable")).toEqual([])
  })

  it("holds back the later events of a key whose topic is missing, across claims, until it is dead-lettered", async () => {
    const s = new Scenario("missing topic")
    const st = await stage(s, { label: "no-topic", mappedTypes: ["search_click", "ac_select"] })
    const topicMap = { ...st.topics.map, job_run_event: `${st.topics.dlq}-never-created` }
    const relay = s.startRelay("fault-no-topic", {
      ...st.relayEnv,
      TOPIC_MAP: JSON.stringify(topicMap),
      KAFKA_AUTO_CREATE_TOPICS: "false",
      MAX_ATTEMPTS: "3",
      BATCH_SIZE: "100",
    })
    await relay.ready()
    await write(st, [
      { dedupKey: "K-1", eventType: "job_run_event", aggregateKey: "K", payload: { n: 1 } },
      // K-2…K-21, of types whose topics exist, in the same claim and the ones after.
      ...Array.from({ length: 20 }, (_, i) => ({
        dedupKey: `K-${i + 2}`,
        eventType: i % 2 === 0 ? "search_click" : "ac_select",
        aggregateKey: "K",
        payload: { n: i + 2 },
      })),
      ...background("no-topic-bg", 300),
    ])
    await waitDrained(st.db, { sinceMs: Date.now(), timeoutMs: 60_000 })

    const rows = await readOutbox(st.db)
    expect(rows.filter((r) => r.status === "DEAD").map((r) => [r.dedup_key, r.dead_reason, r.attempts])).toEqual([
      ["K-1", "attempts_exhausted", 3],
    ])
    const messages = await readAll(st.brokers, st.topics.all)
    const letter = messages.find((m) => m.topic === st.topics.dlq && m.headers.dedup_key === "K-1")
    expect(letter?.headers["dlq.error"]).toContain("does not exist")
    for (let i = 2; i <= 21; i++) {
      expect(rows.find((r) => r.dedup_key === `K-${i}`)?.status).toBe("SENT")
      expect(firstArrival(messages, `K-${i}`), `K-${i} after K-1's dead letter`).toBeGreaterThanOrEqual(letter!.timestamp)
    }
    // The other keys never waited for it.
    expect(rows.filter((r) => r.dedup_key.startsWith("no-topic-bg")).every((r) => r.status === "SENT")).toBe(true)
    expect(relay.linesWith("Kafka unreachable")).toEqual([])
  })
})
