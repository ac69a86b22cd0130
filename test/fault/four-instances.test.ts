/**
 * Scenario 5 (no fault): four relay instances on one table while a service writes. The
 * claim protocol must split the work without overlap: zero duplicates, keys in order,
 * no lease ever taken over or lost.
 */
import { describe, expect, it } from "vitest"
import { waitDrained } from "../support/fault/fault-db.ts"
import { expectEveryEventAccountedFor, printReport } from "../support/fault/ledger.ts"
import { sleep } from "../support/fault/processes.ts"
import { Scenario, settle, stage } from "../support/fault/scenario.ts"

describe("four relay instances on one table", () => {
  it("relays every event exactly once with four instances at once, keys in order", async () => {
    const s = new Scenario("four instances, fault-free")
    const st = await stage(s, { label: "four" })
    st.writer.start()
    await st.writer.waitForCount(500)
    const relays = [1, 2, 3, 4].map((i) => s.startRelay(`fault-four${i}`, st.relayEnv))
    await Promise.all(relays.map((r) => r.ready()))
    const startedAt = Date.now()
    await sleep(6_000)
    await st.writer.stop()
    const drainedIn = await waitDrained(st.db, { sinceMs: startedAt, timeoutMs: 30_000 })

    const ledger = await settle(st)
    const sentBy = relays.map((r) => r.linesWith("batch relayed").reduce((n, l) => n + Number(l.sent), 0))
    printReport({
      scenario: s.name,
      ledger,
      wallSeconds: s.elapsedSeconds(),
      extra: { sent_per_instance: sentBy.join("/"), drained_after_start_s: drainedIn.toFixed(1) },
    })

    expectEveryEventAccountedFor(ledger)
    expect(ledger.dead).toBe(0)
    expect(ledger.duplicates, "no event reached Kafka twice").toBe(0)
    for (const r of relays) {
      expect(r.running).toBe(true)
      expect(r.linesWith("took over rows whose lease expired"), `${r.name} took no lease over`).toEqual([])
      expect(r.linesWith("lease lost before marking"), `${r.name} lost no lease`).toEqual([])
    }
    // The instances really shared the work, and together relayed each event once.
    expect(sentBy.filter((n) => n > 0).length).toBeGreaterThanOrEqual(2)
    expect(sentBy.reduce((a, b) => a + b, 0)).toBe(ledger.sent)
  }, 120_000)
})
