/**
 * Scenario 7: events of a type the relay has no topic for are dead-lettered; once the
 * cause is fixed (the relay restarted with TOPIC_MAP mapping the type), `outbox-relay
 * replay --event-type` requeues them, they arrive on the mapped topic, and the replay
 * leaves an audit line. The service keeps writing throughout.
 */
import { describe, expect, it } from "vitest"
import { DEFAULT_PLAN, type EventSpec } from "../support/fault/event-writer.ts"
import { readOutbox, waitDrained } from "../support/fault/fault-db.ts"
import { readAll } from "../support/fault/kafka-readback.ts"
import { expectEveryEventAccountedFor, printReport } from "../support/fault/ledger.ts"
import { outboxRelay, sleep } from "../support/fault/processes.ts"
import { Scenario, type Stage, settle, stage } from "../support/fault/scenario.ts"

const UNMAPPED = "order_refunded"
const REFUNDS = 12

const countStatus = async (st: Stage, status: string, eventType: string) => {
  const [row] = await st.db.run(
    (sql) => sql<{ n: number }>`SELECT count(*)::int AS n FROM outbox_event WHERE status = ${status} AND event_type = ${eventType}`,
  )
  return row?.n ?? 0
}

const waitFor = async (what: string, check: () => Promise<boolean>, timeoutMs = 20_000) => {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(50)
  }
}

describe("replay of dead letters", () => {
  it("delivers dead-lettered events of an unmapped type to their topic after the type is mapped and they are replayed, with an audit line", async () => {
    const s = new Scenario("replay after fixing TOPIC_MAP")
    const st = await stage(s, { label: "replay", mappedTypes: [...DEFAULT_PLAN.eventTypes, UNMAPPED] })
    const { [UNMAPPED]: refundTopic, ...withoutRefunds } = st.topics.map
    const cli = { DATABASE_URL: st.relayEnv.DATABASE_URL! }

    const before = s.startRelay("fault-replay-before", { ...st.relayEnv, TOPIC_MAP: JSON.stringify(withoutRefunds) })
    await before.ready()
    st.writer.start()
    await st.writer.waitForCount(200)
    const keys = ["key-1", "key-2", "key-5", null]
    for (let i = 0; i < REFUNDS; i++) {
      const refund: EventSpec = {
        dedupKey: `refund-${i}`,
        eventType: UNMAPPED,
        aggregateKey: keys[i % keys.length]!,
        payload: { refund: i },
      }
      st.writer.inject([refund])
      await sleep(100)
    }
    await waitFor("the refunds to be dead-lettered", async () => (await countStatus(st, "DEAD", UNMAPPED)) === REFUNDS)

    const listed = await outboxRelay(["dlq", "list", "--reason", "unknown_event_type", "--json"], cli)
    expect(listed.code).toBe(0)
    const listedRows = listed.output
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as { dedup_key: string; event_type: string })
    expect(listedRows.map((r) => r.event_type)).toEqual(Array(REFUNDS).fill(UNMAPPED))

    // Fix the cause: restart the relay with the type mapped (graceful stop first).
    const stopped = await before.stop()
    expect(stopped.code, "SIGTERM stops the relay with exit 0").toBe(0)
    const after = s.startRelay("fault-replay-after", st.relayEnv)
    await after.ready()

    const dryRun = await outboxRelay(["replay", "--event-type", UNMAPPED, "--dry-run"], cli)
    expect(dryRun.code).toBe(0)
    expect(dryRun.output).toContain(`Dry run: ${REFUNDS} DEAD event(s) would be requeued.`)
    expect(await countStatus(st, "DEAD", UNMAPPED)).toBe(REFUNDS)

    const replayedAt = Date.now()
    const replay = await outboxRelay(["replay", "--event-type", UNMAPPED, "--actor", "fault-suite"], cli)
    expect(replay.code, replay.output).toBe(0)
    expect(replay.output).toMatch(new RegExp(`Requeued ${REFUNDS} DEAD event\\(s\\) as NEW \\(audit #\\d+\\)`))
    await waitFor("the replayed refunds to be SENT", async () => (await countStatus(st, "SENT", UNMAPPED)) === REFUNDS)
    const deliveredIn = (Date.now() - replayedAt) / 1000
    await sleep(1_000)
    await st.writer.stop()
    await waitDrained(st.db, { sinceMs: replayedAt, timeoutMs: 30_000 })

    const ledger = await settle(st)
    const rows = await readOutbox(st.db)
    const refunds = rows.filter((r) => r.event_type === UNMAPPED)
    const onTopic = await readAll(st.brokers, [refundTopic!])
    printReport({
      scenario: s.name,
      ledger,
      recoverySeconds: deliveredIn,
      wallSeconds: s.elapsedSeconds(),
      extra: { replayed: refunds.length },
    })

    expectEveryEventAccountedFor(ledger)
    expect(ledger.dead).toBe(0)
    expect(refunds.map((r) => [r.status, r.kafka_topic])).toEqual(Array(REFUNDS).fill(["SENT", refundTopic]))
    expect(onTopic.map((m) => m.headers.dedup_key).sort()).toEqual(refunds.map((r) => r.dedup_key).sort())
    // Their first trip is still on the dead-letter topic, with the reason.
    const letters = (await readAll(st.brokers, [st.topics.dlq])).filter((m) => m.headers.event_type === UNMAPPED)
    expect(new Set(letters.map((m) => m.headers.dedup_key)).size).toBe(REFUNDS)
    expect(letters.every((m) => m.headers["dlq.reason"] === "unknown_event_type")).toBe(true)

    const audit = await st.db.run(
      (sql) => sql<{ actor: string; origin: string; event_count: number; event_ids: ReadonlyArray<string>; selection: unknown }>`
        SELECT actor, origin, event_count, event_ids::text[] AS event_ids, selection FROM outbox_replay_audit`,
    )
    expect(audit).toHaveLength(1)
    expect(audit[0]).toMatchObject({ actor: "fault-suite", origin: "cli", event_count: REFUNDS })
    expect([...audit[0]!.event_ids].sort()).toEqual(refunds.map((r) => r.id).sort())
    expect(JSON.stringify(audit[0]!.selection)).toContain(UNMAPPED)
  }, 120_000)
})
