/** The OutboxStore contract against PostgreSQL: the same suite the simulation's fake passes. */
import { describe, it } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { SqlClient } from "effect/sql"
import { RelayConfig } from "../../src/config/config.ts"
import { DatabaseLive } from "../../src/outbox/database.ts"
import { InstanceId } from "../../src/outbox/instance-id.ts"
import { OutboxStore } from "../../src/outbox/outbox-store.ts"
import { ROW_CHECKS } from "../../src/outbox/row-limits-sql.ts"
import { CONTRACT_LEASE_MS, CONTRACT_MAX_RECORD_BYTES, outboxStoreContract, type RowState } from "../support/outbox-store-contract.ts"
import { relayConfig } from "../support/relay-harness.ts"
import { sqlLayer, testDatabase } from "../support/test-database.ts"

describe("OutboxStore contract: PostgreSQL", () => {
  outboxStoreContract((name, body) =>
    it.live(name, () =>
      Effect.scoped(
        Effect.gen(function* () {
          const db = yield* testDatabase()
          const config = { ...relayConfig(db.url), leaseMs: CONTRACT_LEASE_MS, maxRecordBytes: CONTRACT_MAX_RECORD_BYTES }
          const sql = Context.get(yield* Layer.build(sqlLayer(db.url)), SqlClient.SqlClient)
          yield* body({
            instance: (instance) =>
              Layer.build(
                OutboxStore.layer.pipe(
                  Layer.provide(Layer.mergeAll(Layer.succeed(InstanceId, instance), DatabaseLive)),
                  Layer.provide(Layer.succeed(RelayConfig, config)),
                ),
              ).pipe(
                Effect.map((context) => Context.get(context, OutboxStore)),
                Effect.orDie,
              ),
            advance: (ms) => Effect.sleep(ms),
            dropRowLimits: Effect.forEach(ROW_CHECKS, ([name]) => sql.unsafe(`ALTER TABLE outbox_event DROP CONSTRAINT ${name}`), {
              discard: true,
            }).pipe(Effect.orDie),
            row: (id) =>
              sql<{ status: RowState["status"]; attempts: number; locked_by: string | null; dead_reason: RowState["deadReason"] }>`
                SELECT status, attempts, locked_by, dead_reason FROM outbox_event WHERE id = ${id}::bigint`.pipe(
                Effect.map(([r]) => ({ status: r!.status, attempts: r!.attempts, lockedBy: r!.locked_by, deadReason: r!.dead_reason })),
                Effect.orDie,
              ),
          })
        }),
      ),
    ),
  )
})
