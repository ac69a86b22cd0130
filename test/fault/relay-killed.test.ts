/**
 * Fault 3: a relay instance is SIGKILLed while it holds a claimed batch. Its rows stay
 * leased until LEASE_MS passes; a second instance then takes them over, says so in its
 * log, and relays them. Duplicates can only come from those rows.
 */
import { describe, expect, it } from "vitest"
import { type Db, heldCount, maxId, startDrainTimer, waitDrained, waitUntilHolding } from "../support/fault/fault-db.ts"
import { expectEveryEventAccountedFor, printReport } from "../support/fault/ledger.ts"
import { sleep } from "../support/fault/processes.ts"
import type { RelayProcess } from "../support/fault/relay-process.ts"
import { Scenario, settle, stage } from "../support/fault/scenario.ts"

const LEASE_MS = 3_000

/** SIGKILLs the relay the moment it holds a claimed batch; gives how many rows it left leased. */
const killMidBatch = async (db: Db, relay: RelayProcess, timeoutMs: number): Promise<number> => {
  await waitUntilHolding(db, `${relay.name}-`, timeoutMs, () => relay.running)
  relay.kill("SIGKILL")
  await relay.exited
  return heldCount(db, `${relay.name}-`)
}

describe("fault: relay instance killed", () => {
  it("has a second instance take over a SIGKILLed instance's leased batch after the lease, logging the takeover", async () => {
    const s = new Scenario("relay SIGKILL mid-batch + takeover")
    const st = await stage(s, { label: "takeover" })
    const { db, writer } = st
    const env = { ...st.relayEnv, LEASE_MS: String(LEASE_MS) }

    // A backlog first, so the instance is busy with full batches when it is killed.
    writer.start()
    await writer.waitForCount(800)
    let orphans = 0
    let victim: RelayProcess | undefined
    for (let attempt = 1; orphans === 0 && attempt <= 5; attempt++) {
      victim = s.startRelay(`fault-victim${attempt}`, env)
      await victim.ready()
      orphans = await killMidBatch(db, victim, 20_000)
    }
    const killedAt = Date.now()
    const backlogTop = await maxId(db)
    // Timed from here, while the writer goes on: the backlog left by the fault drains.
    const recovered = startDrainTimer(db, { upToId: backlogTop, sinceMs: killedAt, timeoutMs: 45_000 })
    expect(orphans, "the instance died holding a claimed batch").toBeGreaterThan(0)

    const successor = s.startRelay("fault-successor", env)
    await successor.ready()
    await successor.waitForLog("took over rows whose lease expired", LEASE_MS + 15_000)
    const tookOverAt = Date.now()
    await sleep(1_500)
    await writer.stop()

    const recoverySeconds = await recovered
    await waitDrained(db, { sinceMs: killedAt, timeoutMs: 30_000 })
    const ledger = await settle(st)
    const takeovers = successor.linesWith("took over rows whose lease expired")
    const takenOver = takeovers.reduce((n, l) => n + Number(l.count), 0)
    printReport({
      scenario: s.name,
      ledger,
      recoverySeconds,
      wallSeconds: s.elapsedSeconds(),
      extra: { orphaned_rows: orphans, taken_over: takenOver, takeover_after_kill_s: ((tookOverAt - killedAt) / 1000).toFixed(2) },
    })

    expectEveryEventAccountedFor(ledger)
    expect(ledger.dead).toBe(0)
    // Every row the dead instance held was taken over by the successor, and logged as such.
    expect(takenOver).toBe(orphans)
    for (const line of takeovers) expect(String(line.from)).toMatch(new RegExp(`^${victim!.name}-${victim!.pid}-`))
    // Its rows waited for the lease: no takeover before it expired.
    expect(tookOverAt - killedAt).toBeGreaterThanOrEqual(LEASE_MS - 1_000)
    // Only rows that were in flight at the kill can reach Kafka twice.
    expect(ledger.duplicates).toBeLessThanOrEqual(orphans)
    expect(successor.running).toBe(true)
  }, 120_000)
})
