/**
 * Fault 2: PostgreSQL (a cluster this test owns, never the shared one) is SIGKILLed
 * mid-stream and started again. The relay backs off and reconnects; the writer retries
 * its inserts. Every committed event ends on Kafka, keys in order, the relay never exits.
 */
import { describe, expect, it } from "vitest"
import { migrateWithCli, waitDrained, waitSent, waitUntilHolding } from "../support/fault/fault-db.ts"
import { expectEveryEventAccountedFor, printReport } from "../support/fault/ledger.ts"
import { type OwnedCluster, sleep, startOwnedCluster } from "../support/fault/processes.ts"
import { outage, Scenario, settle, stage } from "../support/fault/scenario.ts"

const ownedCluster = async (s: Scenario): Promise<OwnedCluster> => {
  const cluster = await startOwnedCluster()
  s.defer("cluster", cluster.destroy)
  s.diagnose("postgres log", () => cluster.logTail(60))
  await migrateWithCli(cluster.url)
  return cluster
}

describe("fault: PostgreSQL restarted", () => {
  it("reconnects after the database is down for seconds mid-stream, and relays every committed event in key order", async () => {
    const s = new Scenario("postgres SIGKILL, 3 s down, restart")
    const cluster = await ownedCluster(s)
    const st = await stage(s, { label: "pg", databaseUrl: cluster.url })
    const relay = s.startRelay("fault-pg", st.relayEnv)
    await relay.ready()
    st.writer.start()
    await waitSent(st.db, 300)

    const ledger = await outage(s, st, {
      breakIt: () => cluster.kill(),
      forMs: 3_000,
      heal: () => cluster.start(),
      extra: (downSeconds) => ({
        db_down_s: downSeconds,
        writer_retries: st.writer.failedInserts,
        loop_restarts: relay.linesWith("relay loop failed").length,
        mark_retries: relay.linesWith("marking failed").length,
        takeovers: relay.linesWith("took over rows whose lease expired").length,
      }),
    })

    expectEveryEventAccountedFor(ledger)
    expect(ledger.dead).toBe(0)
    expect(st.writer.failedInserts, "the outage was real: inserts failed meanwhile").toBeGreaterThan(0)
    expect(relay.running, "the relay rode out the outage").toBe(true)
  }, 120_000)

  it("costs no duplicate when the database restarts (fast shutdown) while a published batch waits to be marked", async () => {
    const s = new Scenario("postgres fast restart mid-batch")
    const cluster = await ownedCluster(s)
    const st = await stage(s, { label: "pgmark", databaseUrl: cluster.url })
    // Marks are retried for 80% of the lease: 4 s here, more than a restart takes.
    const relay = s.startRelay("fault-pgmark", { ...st.relayEnv, LEASE_MS: "5000" })
    st.writer.start()
    await st.writer.waitForCount(1_000)
    await relay.ready()

    // Restart the database while the relay holds a batch, until one restart lands between publish and mark.
    let restarts = 0
    let outage = 0
    const healedAt = Date.now()
    while (relay.linesWith("marking failed").length === 0 && restarts < 6) {
      await waitUntilHolding(st.db, "fault-pgmark-", 20_000)
      await cluster.fastShutdownNow()
      const down = Date.now()
      await cluster.start()
      outage = Math.max(outage, Date.now() - down)
      restarts++
      await sleep(1_500)
    }
    await st.writer.stop()
    await waitDrained(st.db, { sinceMs: healedAt, timeoutMs: 30_000 })
    const ledger = await settle(st)
    printReport({
      scenario: s.name,
      ledger,
      wallSeconds: s.elapsedSeconds(),
      extra: {
        restarts,
        longest_outage_s: (outage / 1000).toFixed(2),
        mark_retries: relay.linesWith("marking failed").length,
        writer_retries: st.writer.failedInserts,
      },
    })

    expectEveryEventAccountedFor(ledger)
    expect(relay.linesWith("marking failed").length, "a restart hit a batch between publish and mark").toBeGreaterThan(0)
    expect(ledger.duplicates, "the mark was retried until the database was back: no event sent twice").toBe(0)
    expect(relay.linesWith("took over rows whose lease expired")).toEqual([])
    expect(relay.running).toBe(true)
  }, 120_000)
})
