/**
 * A refused statement costs only its row. A mark is one statement for many rows, so one row's
 * data error (a value out of range, an index entry too large, a row that broke a bound before
 * the table's constraints existed) would fail the whole batch, again on every retry: the relay
 * would stall and re-send its batch every lease. Instead, a mark that fails with a data error is
 * split in halves until the refused rows are found; the others are marked, and each refused row
 * is settled DEAD `unmarkable` with the SQLSTATE, its columns brought within the table's limits.
 * Outages and lost races are retried within the lease first; a programming error fails loudly.
 */
import { Effect, Metric } from "effect"
import { RelayConfig } from "../config/config.ts"
import type { DatabaseError } from "../domain/errors.ts"
import { type Lease, type MarkResult, OutboxStore } from "../outbox/outbox-store.ts"
import { unmarkableRows } from "../telemetry/metrics.ts"
import { markRetry } from "./retry-policy.ts"

export interface IsolatedMarkResult extends MarkResult {
  /** Rows whose mark was refused, now settled DEAD `unmarkable`. */
  readonly unmarkable: number
}

const NOTHING: IsolatedMarkResult = { marked: [], lost: [], unmarkable: 0 }

const merge = (a: IsolatedMarkResult, b: IsolatedMarkResult): IsolatedMarkResult => ({
  marked: [...a.marked, ...b.marked],
  lost: [...a.lost, ...b.lost],
  unmarkable: a.unmarkable + b.unmarkable,
})

/** Rides out an outage or a lost race for most of the lease; other faults come straight back. */
export const withinLease = <A>(statement: Effect.Effect<A, DatabaseError>) =>
  Effect.flatMap(RelayConfig, (config) =>
    statement.pipe(
      Effect.tapError((e) =>
        e.fault === "outage" || e.fault === "conflict"
          ? Effect.logWarning("marking failed; retrying within the lease").pipe(Effect.annotateLogs({ error: e.message }))
          : Effect.void,
      ),
      Effect.retry(markRetry(config.leaseMs)),
    ),
  )

const settle = (mark: Lease, refusal: DatabaseError) =>
  Effect.gen(function* () {
    const store = yield* OutboxStore
    const error = `${refusal.operation} refused by PostgreSQL (SQLSTATE ${refusal.sqlState ?? "none"}): ${refusal.message}`
    const settled = yield* withinLease(store.settleUnmarkable([{ ...mark, error }])).pipe(
      Effect.catch((e) =>
        // The last resort failed too: the row keeps its lease until it expires, and this repeats loudly.
        Effect.logError("a row whose mark PostgreSQL refused could not be settled either").pipe(
          Effect.annotateLogs({ id: mark.id, refusal: refusal.message, error: e.message }),
          Effect.as({ marked: [], lost: [] } satisfies MarkResult),
        ),
      ),
    )
    if (settled.marked.length > 0) {
      yield* Metric.update(unmarkableRows, settled.marked.length)
      yield* Effect.logError("PostgreSQL refused a row's mark; the row is settled DEAD (unmarkable)").pipe(
        Effect.annotateLogs({ id: mark.id, sqlstate: refusal.sqlState ?? "none", error: refusal.message }),
      )
    }
    return { marked: [], lost: settled.lost, unmarkable: settled.marked.length } satisfies IsolatedMarkResult
  })

export const markIsolating = <M extends Lease>(
  statement: (marks: ReadonlyArray<M>) => Effect.Effect<MarkResult, DatabaseError>,
  marks: ReadonlyArray<M>,
): Effect.Effect<IsolatedMarkResult, DatabaseError, OutboxStore | RelayConfig> => {
  const run = (part: ReadonlyArray<M>): Effect.Effect<IsolatedMarkResult, DatabaseError, OutboxStore | RelayConfig> =>
    part.length === 0
      ? Effect.succeed(NOTHING)
      : withinLease(statement(part)).pipe(
          Effect.map((r): IsolatedMarkResult => ({ ...r, unmarkable: 0 })),
          Effect.catchIf(
            (e) => e.fault === "data",
            (e) => {
              if (part.length === 1) return settle(part[0]!, e)
              const half = Math.ceil(part.length / 2)
              return Effect.zipWith(run(part.slice(0, half)), run(part.slice(half)), merge)
            },
          ),
        )
  return run(marks)
}
