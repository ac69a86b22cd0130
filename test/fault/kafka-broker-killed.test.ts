/**
 * Fault 1: the Kafka broker is SIGKILLed mid-stream and started again some seconds later,
 * while a service keeps writing. Every event must end on Kafka (SENT), none stuck or
 * dead-lettered by a short outage, keys in order.
 */
import { describe, expect, it } from "vitest"
import { waitSent } from "../support/fault/fault-db.ts"
import { expectEveryEventAccountedFor } from "../support/fault/ledger.ts"
import { startOwnedBroker } from "../support/fault/processes.ts"
import { outage, Scenario, stage } from "../support/fault/scenario.ts"

describe("fault: Kafka broker killed", () => {
  it("relays every event once the SIGKILLed broker is back, none lost, none dead, keys in order", async () => {
    const s = new Scenario("kafka broker SIGKILL + restart")
    const broker = await startOwnedBroker()
    s.defer("broker", broker.stop)
    s.diagnose("broker log", () => broker.logTail())
    const st = await stage(s, { label: "kill", brokers: broker.bootstrap })

    const relay = s.startRelay("fault-kill", st.relayEnv)
    await relay.ready()
    st.writer.start()
    await waitSent(st.db, 300)

    const ledger = await outage(s, st, {
      breakIt: () => broker.kill(),
      forMs: 4_000,
      heal: () => broker.start(),
      extra: (downSeconds) => ({
        broker_down_s: downSeconds,
        circuit_opened: relay.linesWith("Kafka unreachable").length,
        producer_recreated: relay.linesWith("Kafka producer recreated").length,
      }),
    })

    expectEveryEventAccountedFor(ledger)
    expect(ledger.dead, "a short outage dead-letters nothing").toBe(0)
    expect(relay.running, "the relay rode out the outage").toBe(true)
    expect(relay.linesWith("Kafka unreachable").length).toBeGreaterThan(0)
    expect(relay.linesWith("Kafka reachable again").length).toBeGreaterThan(0)
  }, 120_000)
})
