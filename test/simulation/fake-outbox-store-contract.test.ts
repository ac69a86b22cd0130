/** The OutboxStore contract against the simulation's in-memory fake: the suite PostgreSQL passes too. */
import { describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Result } from "effect"
import { TestClock } from "effect/testing"
import { parseConfig, RelayConfig } from "../../src/config/config.ts"
import { InstanceId } from "../../src/outbox/instance-id.ts"
import { OutboxStore } from "../../src/outbox/outbox-store.ts"
import { fakeOutboxStoreLayer, makeFakeDatabase, snapshotRows } from "../support/fake-outbox-store.ts"
import { CONTRACT_LEASE_MS, CONTRACT_MAX_RECORD_BYTES, outboxStoreContract } from "../support/outbox-store-contract.ts"

const config = {
  ...Result.getOrThrow(parseConfig({ DATABASE_URL: "postgres://fake/fake", KAFKA_BROKERS: "fake:9092" })),
  leaseMs: CONTRACT_LEASE_MS,
  maxRecordBytes: CONTRACT_MAX_RECORD_BYTES,
}

describe("OutboxStore contract: the simulation's fake", () => {
  outboxStoreContract((name, body) =>
    it.effect(name, () =>
      Effect.scoped(
        Effect.gen(function* () {
          const db = yield* makeFakeDatabase()
          yield* body({
            instance: (instance) =>
              Layer.build(
                fakeOutboxStoreLayer(db).pipe(
                  Layer.provide(Layer.mergeAll(Layer.succeed(InstanceId, instance), Layer.succeed(RelayConfig, config))),
                ),
              ).pipe(Effect.map((context) => Context.get(context, OutboxStore))),
            advance: (ms) => TestClock.adjust(ms),
            // The fake keeps no bounds of its own: any row can be appended to it.
            dropRowLimits: Effect.void,
            row: (id) =>
              snapshotRows(db).pipe(
                Effect.map((rows) => {
                  const r = rows.find((row) => row.id === Number(id))!
                  return { status: r.status, attempts: r.attempts, lockedBy: r.lockedBy, deadReason: r.deadReason }
                }),
              ),
          })
        }),
      ),
    ),
  )
})
