/**
 * The drain cursor (`claimDue(limit, after)`): a claim that starts past the ids already
 * in flight still keeps every key in order, and a row it walked past is claimed by the
 * next pass that starts from the lowest id.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { openStore, relayConfig } from "../support/relay-harness.ts"
import { testDatabase } from "../support/test-database.ts"

describe("claim cursor", () => {
  it.live("claims only ids after the cursor, yet a row below it still holds back its key's later rows", () =>
    Effect.gen(function* () {
      const db = yield* testDatabase()
      const config = relayConfig(db.url)
      // Two store layers: two instances with their own instance ids.
      const me = yield* openStore(config)
      const other = yield* openStore(config)
      const { inserted } = yield* me.append([
        { dedupKey: "k1-first", eventType: "search_click", aggregateKey: "k1", payload: {} },
        { dedupKey: "free-1", eventType: "search_click", payload: {} },
        { dedupKey: "k1-second", eventType: "search_click", aggregateKey: "k1", payload: {} },
        { dedupKey: "free-2", eventType: "search_click", payload: {} },
      ])
      const [, free1] = inserted

      // The other instance holds k1-first.
      const held = yield* other.claimDue(1)
      expect(held.map((e) => e.dedupKey)).toEqual(["k1-first"])

      // A pass past free-1: free-1 is not walked again, k1-second waits behind k1-first.
      const past = yield* me.claimDue(10, free1!)
      expect(past.map((e) => e.dedupKey)).toEqual(["free-2"])

      // Once k1-first is sent, a pass from the lowest id takes free-1 and k1-second.
      yield* other.markSent([{ id: held[0]!.id, lease: held[0]!.lease, topic: "t", partition: 0, offset: "0" }])
      const fresh = yield* me.claimDue(10)
      expect(fresh.map((e) => e.dedupKey)).toEqual(["free-1", "k1-second"])
    }).pipe(Effect.scoped),
  )
})
