/**
 * markIsolating over the simulation's fake store, with a mark statement that PostgreSQL-like
 * refuses any batch holding certain rows. The real-stack proof is test/fault/refused-marks.test.ts;
 * this one checks the splitting itself: who is marked, who is settled, how many statements.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Result } from "effect"
import { parseConfig, RelayConfig } from "../../src/config/config.ts"
import { DatabaseError } from "../../src/domain/errors.ts"
import { InstanceId } from "../../src/outbox/instance-id.ts"
import { type MarkResult, OutboxStore, type SentMark } from "../../src/outbox/outbox-store.ts"
import { markIsolating } from "../../src/relay/mark-isolation.ts"
import { fakeOutboxStoreLayer, makeFakeDatabase, snapshotRows } from "../support/fake-outbox-store.ts"

const config = Result.getOrThrow(parseConfig({ DATABASE_URL: "postgres://fake/fake", KAFKA_BROKERS: "fake:9092" }))

const refusal = (fault: DatabaseError["fault"]) =>
  new DatabaseError({ operation: "mark sent", message: "value out of range (simulated)", fault, sqlState: "22003", cause: null })

const setup = (n: number) =>
  Effect.gen(function* () {
    const db = yield* makeFakeDatabase()
    const layer = fakeOutboxStoreLayer(db).pipe(
      Layer.provideMerge(Layer.mergeAll(Layer.succeed(InstanceId, "instance-a"), Layer.succeed(RelayConfig, config))),
    )
    const store = yield* Effect.provide(
      Effect.gen(function* () {
        return yield* OutboxStore
      }),
      layer,
    )
    yield* store.append(Array.from({ length: n }, (_, i) => ({ dedupKey: `d${i + 1}`, eventType: "search_click", payload: {} })))
    const claimed = yield* store.claimDue(n)
    const marks: ReadonlyArray<SentMark> = claimed.map((e, i) => ({
      id: e.id,
      lease: e.lease,
      topic: "t",
      partition: 0,
      offset: String(i),
    }))
    return { db, layer, store, marks }
  })

describe("mark isolation", () => {
  it.effect("marks every row but the refused ones, and settles those DEAD unmarkable", () =>
    Effect.gen(function* () {
      const { db, layer, store, marks } = yield* setup(40)
      const refused = new Set(["3", "17", "40"])
      let statements = 0
      const statement = (part: ReadonlyArray<SentMark>): Effect.Effect<MarkResult, DatabaseError> => {
        statements++
        return part.some((m) => refused.has(m.id)) ? Effect.fail(refusal("data")) : store.markSent(part)
      }
      const result = yield* markIsolating(statement, marks).pipe(Effect.provide(layer))
      expect(result.unmarkable).toBe(3)
      expect([...result.marked].sort()).toEqual(
        marks
          .map((m) => m.id)
          .filter((id) => !refused.has(id))
          .sort(),
      )
      const rows = yield* snapshotRows(db)
      for (const row of rows) {
        expect(row.status).toBe(refused.has(String(row.id)) ? "DEAD" : "SENT")
        if (refused.has(String(row.id))) expect(row.deadReason).toBe("unmarkable")
      }
      // Halving finds k refused rows among n in about 2·k·log2(n) statements, not n.
      expect(statements).toBeLessThanOrEqual(2 * 3 * Math.ceil(Math.log2(40)) + 1)
    }),
  )

  it.effect("gives a programming error back unsplit: it is loud, not a row's fault", () =>
    Effect.gen(function* () {
      const { layer, marks } = yield* setup(8)
      let statements = 0
      const statement = (): Effect.Effect<MarkResult, DatabaseError> => {
        statements++
        return Effect.fail(refusal("programming"))
      }
      const exit = yield* markIsolating(statement, marks).pipe(Effect.provide(layer), Effect.exit)
      expect(exit._tag).toBe("Failure")
      expect(statements).toBe(1)
    }),
  )
})
