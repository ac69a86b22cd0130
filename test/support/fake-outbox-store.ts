/**
 * An in-memory outbox table that keeps the OutboxStore contract (test/support/outbox-store-contract.ts
 * proves it against the same tests as the PostgreSQL store): leases and their expiry, the
 * per-key claim rule, marks only on rows the instance still holds, FAILED with next_attempt_at.
 * Time is the Effect Clock, so under TestClock leases expire and retries come due when the
 * simulation says. Every instance gets a view with its own name over one shared table.
 */
import { Clock, Effect, Layer, Ref, Stream } from "effect"
import { RelayConfig } from "../../src/config/config.ts"
import { DatabaseError, type DeadReason } from "../../src/domain/errors.ts"
import type { ClaimedEvent, EventStatus, NewEvent, Oversize, RecordColumn } from "../../src/domain/outbox-event.ts"
import { ROW_LIMITS } from "../../src/domain/row-limits.ts"
import { InstanceId } from "../../src/outbox/instance-id.ts"
import { type Lease, type MarkResult, OutboxStore } from "../../src/outbox/outbox-store.ts"

export interface FakeRow {
  readonly id: number
  readonly eventId: string
  readonly dedupKey: string
  readonly eventType: string
  readonly aggregateKey: string | null
  readonly payload: string
  readonly headers: string
  readonly requestId: string | null
  readonly traceparent: string | null
  readonly createdAt: number
  status: EventStatus
  attempts: number
  nextAttemptAt: number
  lastError: string | null
  deadReason: DeadReason | null
  lockedBy: string | null
  lockedUntil: number | null
  sentAt: number | null
  delivery: { readonly topic: string; readonly partition: number; readonly offset: string } | null
}

/** What the simulation's invariants read besides the rows. */
export interface StoreJournal {
  /** Every FAILED mark: the retry it scheduled (1-based) and its delay. */
  readonly retries: Array<{ readonly id: number; readonly retry: number; readonly delayMs: number }>
  /** Every claim of a row whose lease had expired under another (or a previous) holder. */
  readonly takeovers: Array<{ readonly id: number; readonly from: string; readonly by: string }>
}

interface TableState {
  readonly rows: Array<FakeRow>
  nextId: number
}

/** Faults the simulation turns on and off. */
export interface StoreFaults {
  /** The database is unreachable: every statement fails. */
  down: boolean
  /** Instances whose process "died": their statements fail (their leases stay until they expire). */
  readonly severed: Set<string>
  /** Each statement fails with this probability (drawn from the simulation's seeded random). */
  failureRate: number
}

export interface FakeDatabase {
  readonly table: Ref.Ref<TableState>
  readonly journal: StoreJournal
  readonly faults: StoreFaults
  /** The simulation's seeded random, for failure rates. */
  readonly random: () => number
}

export const makeFakeDatabase = (random: () => number = () => 0): Effect.Effect<FakeDatabase> =>
  Effect.map(Ref.make<TableState>({ rows: [], nextId: 1 }), (table) => ({
    table,
    journal: { retries: [], takeovers: [] },
    faults: { down: false, severed: new Set(), failureRate: 0 },
    random,
  }))

const isPending = (r: FakeRow) => r.status === "NEW" || r.status === "FAILED"
const bytes = (s: string) => Buffer.byteLength(s)

/** The claim's measure of a row (see OutboxStore.claimDue): every record column, the key counted as such. */
const measureRecord = (row: FakeRow): Oversize => {
  const sizes: ReadonlyArray<readonly [RecordColumn, number | null]> = [
    ["payload", bytes(row.payload)],
    ["headers", bytes(row.headers)],
    ["event_type", bytes(row.eventType)],
    ["aggregate_key", row.aggregateKey === null ? null : bytes(row.aggregateKey)],
    ["dedup_key", bytes(row.dedupKey)],
    ["request_id", row.requestId === null ? null : bytes(row.requestId)],
    ["traceparent", row.traceparent === null ? null : bytes(row.traceparent)],
  ]
  let total = bytes(row.aggregateKey === null ? row.dedupKey : "")
  let largest = sizes[0]!
  for (const entry of sizes) {
    total += entry[1] ?? 0
    if ((entry[1] ?? -1) > (largest[1] ?? -1)) largest = entry
  }
  // As the claim: the first text column beyond its bound names the row, else the largest column.
  const beyond = sizes.find(([column, size]) => column in COLUMN_BOUNDS && (size ?? 0) > COLUMN_BOUNDS[column]!)
  return beyond === undefined
    ? { bytes: total, column: largest[0], columnLimit: null }
    : { bytes: total, column: beyond[0], columnLimit: COLUMN_BOUNDS[beyond[0]]! }
}

const COLUMN_BOUNDS: Partial<Record<RecordColumn, number>> = {
  event_type: ROW_LIMITS.eventTypeBytes,
  aggregate_key: ROW_LIMITS.aggregateKeyBytes,
  dedup_key: ROW_LIMITS.dedupKeyBytes,
  request_id: ROW_LIMITS.requestIdBytes,
  traceparent: ROW_LIMITS.traceparentBytes,
}

/** As the claim's stand-in in SQL: the first 64 characters and the size. */
const standIn = (value: string) => `${[...value].slice(0, 64).join("")}… (${bytes(value)} bytes)`

/** One instance's OutboxStore over the shared table: needs RelayConfig and InstanceId, like the real one. */
export const fakeOutboxStoreLayer = (db: FakeDatabase) =>
  Layer.effect(
    OutboxStore,
    Effect.gen(function* () {
      const config = yield* RelayConfig
      const me = yield* InstanceId

      // A statement: fails as a database error when the simulation says so, else runs atomically.
      const statement = <A>(operation: string, f: (state: TableState, now: number) => A): Effect.Effect<A, DatabaseError> =>
        Effect.gen(function* () {
          if (db.faults.down || db.faults.severed.has(me) || (db.faults.failureRate > 0 && db.random() < db.faults.failureRate)) {
            return yield* new DatabaseError({
              operation,
              message: `${operation}: connection refused (simulated)`,
              fault: "outage",
              cause: null,
            })
          }
          const now = yield* Clock.currentTimeMillis
          return yield* Ref.modify(db.table, (state) => [f(state, now), state] as const)
        })

      const claimDue = (limit: number, after = "0") =>
        statement("claim", (state, now): ReadonlyArray<ClaimedEvent> => {
          const from = Number(after)
          const candidates = state.rows
            .filter((r) => isPending(r) && r.id > from && r.nextAttemptAt <= now && (r.lockedUntil === null || r.lockedUntil < now))
            .sort((a, b) => a.id - b.id)
            .slice(0, limit)
          const inClaim = new Set(candidates.map((c) => c.id))
          const eligible = candidates.filter(
            (c) =>
              c.aggregateKey === null ||
              !state.rows.some(
                (older) =>
                  older.aggregateKey === c.aggregateKey &&
                  older.id < c.id &&
                  isPending(older) &&
                  !inClaim.has(older.id) &&
                  !(older.lockedBy === me && older.lockedUntil !== null && older.lockedUntil > now),
              ),
          )
          return eligible.map((row) => {
            const previousOwner = row.lockedBy
            if (previousOwner !== null) db.journal.takeovers.push({ id: row.id, from: previousOwner, by: me })
            row.lockedBy = me
            row.lockedUntil = now + config.leaseMs
            const measured = measureRecord(row)
            const fits = measured.columnLimit === null && measured.bytes <= config.maxRecordBytes
            const within = (value: string, bound: number) => (fits || bytes(value) <= bound ? value : standIn(value))
            const withinOrNull = (value: string | null, bound: number) => (value === null ? null : within(value, bound))
            return {
              id: String(row.id),
              eventId: row.eventId,
              dedupKey: within(row.dedupKey, ROW_LIMITS.dedupKeyBytes),
              eventType: within(row.eventType, ROW_LIMITS.eventTypeBytes),
              aggregateKey: withinOrNull(row.aggregateKey, ROW_LIMITS.aggregateKeyBytes),
              payload: fits ? row.payload : "null",
              headers: fits ? row.headers : "{}",
              oversize: fits ? null : measured,
              requestId: withinOrNull(row.requestId, ROW_LIMITS.requestIdBytes),
              traceparent: withinOrNull(row.traceparent, ROW_LIMITS.traceparentBytes),
              attempts: row.attempts,
              waitingDeadLetter:
                row.status === "FAILED" && row.deadReason !== null ? { reason: row.deadReason, error: row.lastError ?? "" } : null,
              createdAtMs: row.createdAt,
              takenOverFrom: previousOwner,
              lease: String(row.lockedUntil),
            }
          })
        })

      const holds = (row: FakeRow | undefined, { lease }: Lease): row is FakeRow =>
        row !== undefined && row.lockedBy === me && String(row.lockedUntil) === lease && isPending(row)

      /** Applies `update` to each row this instance holds under the claim the mark names; the others are lost. */
      const mark = (operation: string, leases: ReadonlyArray<Lease>, update: (row: FakeRow, index: number, now: number) => void) =>
        leases.length === 0
          ? Effect.succeed<MarkResult>({ marked: [], lost: [] })
          : statement(operation, (state, now): MarkResult => {
              const marked: Array<string> = []
              const lost: Array<string> = []
              leases.forEach((held, i) => {
                const id = held.id
                const row = state.rows.find((r) => r.id === Number(id))
                if (holds(row, held)) {
                  update(row, i, now)
                  row.lockedBy = null
                  row.lockedUntil = null
                  marked.push(id)
                } else lost.push(id)
              })
              return { marked, lost }
            })

      return OutboxStore.of({
        claimDue,
        markSent: (marks) =>
          mark("mark sent", marks, (row, i, now) => {
            const m = marks[i]!
            row.status = "SENT"
            row.sentAt = now
            row.lastError = null
            row.delivery = { topic: m.topic, partition: m.partition, offset: m.offset }
          }),
        markFailed: (marks) =>
          mark("mark failed", marks, (row, i, now) => {
            const m = marks[i]!
            row.status = "FAILED"
            if (m.countsAttempt) row.attempts += 1
            row.lastError = m.error
            row.deadReason = m.deadReason
            row.nextAttemptAt = now + m.retryInMs
            // The retry the delay was drawn for: a wait for the dead letter spends no attempt.
            db.journal.retries.push({ id: row.id, retry: m.countsAttempt ? row.attempts : row.attempts + 1, delayMs: m.retryInMs })
          }),
        markDead: (marks) =>
          mark("mark dead", marks, (row, i) => {
            const m = marks[i]!
            row.status = "DEAD"
            if (m.countsAttempt) row.attempts += 1
            row.deadReason = m.reason
            row.lastError = m.error
          }),
        settleUnmarkable: (marks) =>
          mark("settle unmarkable", marks, (row, i) => {
            row.status = "DEAD"
            row.deadReason = "unmarkable"
            row.lastError = marks[i]!.error
          }),
        renewLeases: (leases) =>
          leases.length === 0
            ? Effect.succeed([])
            : statement("renew leases", (state, now) =>
                leases.flatMap((held) => {
                  const row = state.rows.find((r) => r.id === Number(held.id))
                  if (!holds(row, held)) return []
                  row.lockedUntil = now + config.leaseMs
                  return [{ id: held.id, lease: String(row.lockedUntil) }]
                }),
              ),
        release: (leases) =>
          leases.length === 0
            ? Effect.succeed(0)
            : statement("release", (state) => {
                let n = 0
                for (const held of leases) {
                  const row = state.rows.find((r) => r.id === Number(held.id))
                  if (holds(row, held)) {
                    row.lockedBy = null
                    row.lockedUntil = null
                    n++
                  }
                }
                return n
              }),
        leaseHolders: (ids) =>
          statement("lease holders", (state) => {
            const holders = new Map<string, string | null>()
            for (const id of ids) {
              const row = state.rows.find((r) => r.id === Number(id))
              if (row === undefined) continue
              holders.set(id, isPending(row) ? row.lockedBy : (row.lockedBy ?? "another instance (already marked)"))
            }
            return holders
          }),
        append: (events) => statement("append", (state, now) => appendRows(state, events, now)),
        countByStatus: statement("count", (state) => {
          const counts: Record<EventStatus, number> = { NEW: 0, SENT: 0, FAILED: 0, DEAD: 0 }
          for (const r of state.rows) counts[r.status]++
          return counts
        }),
        requireCurrentSchema: Effect.void,
        insertWakeUps: Stream.never,
      })
    }),
  )

const appendRows = (state: TableState, events: ReadonlyArray<NewEvent>, now: number) => {
  const inserted: Array<string> = []
  for (const e of events) {
    if (state.rows.some((r) => r.dedupKey === e.dedupKey)) continue
    const id = state.nextId++
    state.rows.push({
      id,
      eventId: `00000000-0000-7000-8000-${String(id).padStart(12, "0")}`,
      dedupKey: e.dedupKey,
      eventType: e.eventType,
      aggregateKey: e.aggregateKey ?? null,
      payload: JSON.stringify(e.payload ?? null),
      headers: JSON.stringify(e.headers ?? {}),
      requestId: e.requestId ?? null,
      traceparent: e.traceparent ?? null,
      createdAt: now,
      status: "NEW",
      attempts: 0,
      nextAttemptAt: now,
      lastError: null,
      deadReason: null,
      lockedBy: null,
      lockedUntil: null,
      sentAt: null,
      delivery: null,
    })
    inserted.push(String(id))
  }
  return { inserted, duplicates: events.length - inserted.length }
}

/** A service's insert: not subject to the relay's faults (the writer retries on its own). */
export const writeEvents = (db: FakeDatabase, events: ReadonlyArray<NewEvent>) =>
  Effect.flatMap(Clock.currentTimeMillis, (now) => Ref.modify(db.table, (state) => [appendRows(state, events, now), state] as const))

/** The rows as they are now (a copy), for invariants. */
export const snapshotRows = (db: FakeDatabase) => Ref.get(db.table).pipe(Effect.map((s) => s.rows.map((r) => ({ ...r }))))
