/**
 * Fault 4: the network between the relay and the broker stalls (a proxy stops moving
 * bytes but keeps every connection open) and later heals. Sends time out, the producer is
 * replaced, the loop waits for Kafka; after the heal every event arrives, keys in order.
 * The broker advertises the proxy's port, so every client connection goes through it.
 */
import { describe, expect, it } from "vitest"
import { waitSent } from "../support/fault/fault-db.ts"
import { expectEveryEventAccountedFor } from "../support/fault/ledger.ts"
import { brokerBehindProxy, outage, Scenario, stage } from "../support/fault/scenario.ts"

describe("fault: network to the broker stalls", () => {
  it("relays every event after a network stall heals, keys in order, nothing dead-lettered", async () => {
    const s = new Scenario("network stall (blackhole proxy)")
    const { proxy, broker } = await brokerBehindProxy(s)
    const st = await stage(s, { label: "stall", brokers: broker.bootstrap })

    const relay = s.startRelay("fault-stall", st.relayEnv)
    await relay.ready()
    st.writer.start()
    await waitSent(st.db, 300)

    const ledger = await outage(s, st, {
      breakIt: () => proxy.stall(),
      forMs: 6_000,
      heal: () => proxy.heal(),
      extra: (downSeconds) => ({
        stalled_s: downSeconds,
        proxy_connections: proxy.connections,
        producer_recreated: relay.linesWith("Kafka producer recreated").length,
        circuit_opened: relay.linesWith("Kafka unreachable").length,
      }),
    })

    expectEveryEventAccountedFor(ledger)
    expect(ledger.dead).toBe(0)
    expect(relay.running).toBe(true)
    // The stall was felt: a send timed out and the loop waited for Kafka.
    expect(relay.linesWith("Kafka unreachable").length).toBeGreaterThan(0)
    // …and the loop found the broker again after the heal (a wedged admin client once kept it waiting forever).
    expect(relay.linesWith("Kafka reachable again").length).toBeGreaterThan(0)
  }, 120_000)
})
