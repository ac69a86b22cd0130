/**
 * An in-memory outbox table that keeps the OutboxStore contract (test/support/outbox-store-contract.ts
 * proves it against the same tests as the PostgreSQL store): leases and their expiry, the
 * per-key claim rule, marks only on rows the instance still holds, FAILED with next_attempt_at.
 * Time is the Effect Clock, so under TestClock leases expire and retries come due when the
 * simulation says. Every instance gets a view with its own name over one shared table.
 */
import { Clock, Effect, Layer, Ref, Stream } from "effect"
import { RelayConfig } from "../../src/config/config.ts"
import { faultOfSqlState } from "../../src/domain/database-fault.ts"
import { DatabaseError, type DeadReason } from "../../src/domain/errors.ts"
import type { ClaimedEvent, EventStatus, NewEvent, Oversize, RecordColumn } from "../../src/domain/outbox-event.ts"
import { ROW_LIMITS } from "../../src/domain/row-limits.ts"
import { InstanceId } from "../../src/outbox/instance-id.ts"
import { type Lease, type MarkResult, OutboxStore } from "../../src/outbox/outbox-store.ts"

export interface FakeRow {
  readonly id: number
  readonly eventId: string
  dedupKey: string
  eventType: string
  aggregateKey: string | null
  readonly payload: string
  readonly headers: string
  requestId: string | null
  traceparent: string | null
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
  readonly takeovers: Array<{ readonly id: number; readonly from: string; readonly by: string; readonly at: number }>
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

/** The fenced writes a step checker is told about as they land. */
export type FencedWrite = "mark sent" | "mark failed" | "mark dead" | "release" | "renew" | "settle unmarkable"

/** Told about every statement's effect as it lands (the simulation's step checker). */
export interface StoreObserver {
  readonly claimed: (by: string, now: number, rows: ReadonlyArray<FakeRow>, table: ReadonlyArray<FakeRow>) => void
  readonly fenced: (write: FencedWrite, by: string, now: number, row: FakeRow, lease: string) => void
}

export interface FakeDatabase {
  readonly table: Ref.Ref<TableState>
  readonly journal: StoreJournal
  readonly faults: StoreFaults
  /**
   * The ROW_LIMITS CHECK constraints exist (NOT VALID: rows from before them stay until
   * settled, but every INSERT and every UPDATE of any row is checked). Without them, the table
   * takes any column size and only PostgreSQL's own limits refuse a statement.
   */
  constraints: boolean
  observer: StoreObserver | undefined
  /** The simulation's seeded random, for failure rates. */
  readonly random: () => number
}

export const makeFakeDatabase = (random: () => number = () => 0): Effect.Effect<FakeDatabase> =>
  Effect.map(Ref.make<TableState>({ rows: [], nextId: 1 }), (table) => ({
    table,
    journal: { retries: [], takeovers: [] },
    faults: { down: false, severed: new Set(), failureRate: 0 },
    observer: undefined,
    constraints: false,
    random,
  }))

const isPending = (r: FakeRow) => r.status === "NEW" || r.status === "FAILED"
const bytes = (s: string) => Buffer.byteLength(s)

/** A btree entry must fit a third of an 8 kB page: outbox_event_dead_idx (event_type, created_at) refuses more. */
const DEAD_INDEX_ENTRY_MAX = 2_704
const INT4_MAX = 2_147_483_647
const L = ROW_LIMITS

/** The ROW_LIMITS bounds this row breaks (row-limits-sql.ts's ROW_CHECKS, in the fake's terms). */
export const brokenLimits = (r: FakeRow): ReadonlyArray<string> =>
  [
    bytes(r.eventType) > L.eventTypeBytes && "outbox_event_event_type_bytes",
    r.aggregateKey !== null && bytes(r.aggregateKey) > L.aggregateKeyBytes && "outbox_event_aggregate_key_bytes",
    bytes(r.dedupKey) > L.dedupKeyBytes && "outbox_event_dedup_key_bytes",
    r.requestId !== null && bytes(r.requestId) > L.requestIdBytes && "outbox_event_request_id_bytes",
    r.traceparent !== null && bytes(r.traceparent) > L.traceparentBytes && "outbox_event_traceparent_bytes",
    (r.attempts < 0 || r.attempts > L.maxAttempts) && "outbox_event_attempts_range",
  ].filter((name): name is string => name !== false)

/** Why PostgreSQL refuses to write this row as it would be after an UPDATE (undefined: it takes it). */
const refusalOf = (next: FakeRow, constraints: boolean): { readonly sqlState: string; readonly message: string } | undefined => {
  if (next.attempts > INT4_MAX) return { sqlState: "22003", message: "integer out of range" }
  if (next.status === "DEAD" && bytes(next.eventType) + 16 > DEAD_INDEX_ENTRY_MAX) {
    return {
      sqlState: "54000",
      message: `index row requires ${bytes(next.eventType) + 16} bytes, maximum size is ${DEAD_INDEX_ENTRY_MAX}`,
    }
  }
  const broken = constraints ? brokenLimits(next) : []
  if (broken.length > 0) {
    return { sqlState: "23514", message: `new row for relation "outbox_event" violates check constraint "${broken[0]}"` }
  }
  return undefined
}

/** What settling a row does to its columns (row-limits-sql.ts's WITHIN_LIMITS_SET): it then breaks no bound. */
const bringWithinLimits = (r: FakeRow) => {
  // left() counts characters; a character is at most 4 bytes in UTF-8.
  const clip = (v: string, max: number) => (bytes(v) > max ? v.slice(0, Math.floor(max / 4)) : v)
  r.eventType = clip(r.eventType, L.eventTypeBytes)
  if (bytes(r.dedupKey) > L.dedupKeyBytes) r.dedupKey = `${r.dedupKey.slice(0, 200)} md5:${r.dedupKey.length}`
  if (r.aggregateKey !== null) r.aggregateKey = clip(r.aggregateKey, L.aggregateKeyBytes)
  if (r.requestId !== null) r.requestId = clip(r.requestId, L.requestIdBytes)
  if (r.traceparent !== null) r.traceparent = clip(r.traceparent, L.traceparentBytes)
  r.attempts = Math.min(Math.max(r.attempts, 0), L.maxAttempts)
}

/** A statement PostgreSQL refused for a row's data: the whole statement fails, nothing of it lands. */
class Refused {
  readonly sqlState: string
  readonly message: string
  constructor(sqlState: string, message: string) {
    this.sqlState = sqlState
    this.message = message
  }
}
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

      // Built once per operation: a Schema error's constructor validates, and outages fail many statements.
      const outages = new Map<string, DatabaseError>()
      const outage = (operation: string) => {
        let error = outages.get(operation)
        if (error === undefined) {
          error = new DatabaseError({ operation, message: `${operation}: connection refused (simulated)`, fault: "outage", cause: null })
          outages.set(operation, error)
        }
        return error
      }

      // A statement: fails as a database error when the simulation says so, else runs atomically.
      const statement = <A>(operation: string, f: (state: TableState, now: number) => A): Effect.Effect<A, DatabaseError> =>
        Effect.gen(function* () {
          if (db.faults.down || db.faults.severed.has(me) || (db.faults.failureRate > 0 && db.random() < db.faults.failureRate)) {
            return yield* outage(operation)
          }
          const now = yield* Clock.currentTimeMillis
          const outcome = yield* Ref.modify(
            db.table,
            (state): readonly [{ readonly ok: A } | { readonly refused: Refused }, TableState] => {
              try {
                return [{ ok: f(state, now) }, state]
              } catch (e) {
                if (e instanceof Refused) return [{ refused: e }, state]
                throw e
              }
            },
          )
          if ("refused" in outcome) {
            return yield* new DatabaseError({
              operation,
              message: `${operation}: ${outcome.refused.message} (simulated)`,
              fault: faultOfSqlState(outcome.refused.sqlState),
              sqlState: outcome.refused.sqlState,
              cause: null,
            })
          }
          return outcome.ok
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
          if (db.constraints) {
            for (const row of eligible) {
              const broken = brokenLimits(row)
              if (broken.length > 0) {
                throw new Refused("23514", `new row for relation "outbox_event" violates check constraint "${broken[0]}"`)
              }
            }
          }
          const claimed = eligible.map((row) => {
            const previousOwner = row.lockedBy
            if (previousOwner !== null) db.journal.takeovers.push({ id: row.id, from: previousOwner, by: me, at: now })
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
          db.observer?.claimed(me, now, eligible, state.rows)
          return claimed
        })

      const holds = (row: FakeRow | undefined, { lease }: Lease): row is FakeRow =>
        row !== undefined && row.lockedBy === me && String(row.lockedUntil) === lease && isPending(row)

      /** Applies `update` to each row this instance holds under the claim the mark names; the others are lost. */
      const mark = (operation: FencedWrite, leases: ReadonlyArray<Lease>, update: (row: FakeRow, index: number, now: number) => void) =>
        leases.length === 0
          ? Effect.succeed<MarkResult>({ marked: [], lost: [] })
          : statement(operation, (state, now): MarkResult => {
              const marked: Array<string> = []
              const lost: Array<string> = []
              // Every row's new version first: one refused row fails the whole statement, as in PostgreSQL.
              const writes: Array<readonly [FakeRow, FakeRow, string]> = []
              leases.forEach((held, i) => {
                const row = state.rows.find((r) => r.id === Number(held.id))
                if (!holds(row, held)) {
                  lost.push(held.id)
                  return
                }
                const next = { ...row }
                update(next, i, now)
                next.lockedBy = null
                next.lockedUntil = null
                const refusal = refusalOf(next, db.constraints)
                if (refusal !== undefined) throw new Refused(refusal.sqlState, refusal.message)
                writes.push([row, next, held.lease])
              })
              for (const [row, next, lease] of writes) {
                Object.assign(row, next)
                db.observer?.fenced(operation, me, now, row, lease)
                marked.push(String(row.id))
              }
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
            row.lastError = m.error.slice(0, L.lastErrorChars)
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
            row.lastError = m.error.slice(0, L.lastErrorChars)
          }),
        settleUnmarkable: (marks) =>
          mark("settle unmarkable", marks, (row, i) => {
            bringWithinLimits(row)
            row.status = "DEAD"
            row.deadReason = "unmarkable"
            row.lastError = marks[i]!.error.slice(0, L.lastErrorChars)
          }),
        renewLeases: (leases) =>
          leases.length === 0
            ? Effect.succeed([])
            : statement("renew leases", (state, now) =>
                leases.flatMap((held) => {
                  const row = state.rows.find((r) => r.id === Number(held.id))
                  if (!holds(row, held)) return []
                  row.lockedUntil = now + config.leaseMs
                  db.observer?.fenced("renew", me, now, row, held.lease)
                  return [{ id: held.id, lease: String(row.lockedUntil) }]
                }),
              ),
        release: (leases) =>
          leases.length === 0
            ? Effect.succeed(0)
            : statement("release", (state, now) => {
                let n = 0
                for (const held of leases) {
                  const row = state.rows.find((r) => r.id === Number(held.id))
                  if (holds(row, held)) {
                    row.lockedBy = null
                    row.lockedUntil = null
                    db.observer?.fenced("release", me, now, row, held.lease)
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
        append: (events) =>
          statement("append", (state, now) => {
            const { inserted, duplicates, refused } = appendRows(state, events, now, db.constraints)
            if (refused.length > 0) throw new Refused("23514", `new row for relation "outbox_event" violates a check constraint`)
            return { inserted, duplicates }
          }),
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

/** A row as plain SQL may insert it: any column size, any attempts count. */
export interface RawEvent extends NewEvent {
  readonly attempts?: number
}

const appendRows = (state: TableState, events: ReadonlyArray<RawEvent>, now: number, constraints: boolean) => {
  const inserted: Array<string> = []
  const refused: Array<string> = []
  for (const e of events) {
    if (state.rows.some((r) => r.dedupKey === e.dedupKey)) continue
    const id = state.nextId
    const row: FakeRow = {
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
      attempts: e.attempts ?? 0,
      nextAttemptAt: now,
      lastError: null,
      deadReason: null,
      lockedBy: null,
      lockedUntil: null,
      sentAt: null,
      delivery: null,
    }
    // The writer's INSERT gets PostgreSQL's clear error for a row over a bound.
    if (constraints && brokenLimits(row).length > 0) {
      refused.push(e.dedupKey)
      continue
    }
    state.nextId++
    state.rows.push(row)
    inserted.push(String(row.id))
  }
  return { inserted, duplicates: events.length - inserted.length - refused.length, refused }
}

/**
 * What migration 7 does to rows that already break a bound when the constraints are added:
 * settles each pending one DEAD `out_of_limits`, brought within the bounds.
 */
export const settleOutOfLimits = (db: FakeDatabase) =>
  Ref.update(db.table, (state) => {
    for (const row of state.rows) {
      if (!isPending(row) || brokenLimits(row).length === 0) continue
      row.lastError = `out of limits: ${brokenLimits(row).join(", ")}`
      bringWithinLimits(row)
      row.status = "DEAD"
      row.deadReason = "out_of_limits"
      row.lockedBy = null
      row.lockedUntil = null
    }
    return state
  })

/** A service's insert: not subject to the relay's faults (the writer retries on its own). */
/**
 * A service's insert (or plain SQL): not subject to the relay's faults (the writer retries on
 * its own). `refused`: dedup keys the table's constraints refused.
 */
export const writeEvents = (db: FakeDatabase, events: ReadonlyArray<RawEvent>, constraints = db.constraints) =>
  Effect.flatMap(Clock.currentTimeMillis, (now) =>
    Ref.modify(db.table, (state) => [appendRows(state, events, now, constraints), state] as const),
  )

/** The rows as they are now (a copy), for invariants. */
export const snapshotRows = (db: FakeDatabase) => Ref.get(db.table).pipe(Effect.map((s) => s.rows.map((r) => ({ ...r }))))
