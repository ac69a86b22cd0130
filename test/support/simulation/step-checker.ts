/**
 * What must hold at every step of a simulated run, checked as each statement lands and each
 * send starts or is acknowledged (TigerBeetle's state checker is the model: it runs on every
 * replica event, not after the run). The fakes report to it; it keeps its own model of who
 * holds which row under which lease, so a fake that forgot a fence, or relay code that sent
 * or marked under the wrong lease, shows up at the step it happened, with the simulated time.
 *
 * - A claim takes only rows nobody holds (unleased, or their lease expired).
 * - One holder per key where it matters, at every send: a record (or dead letter) of a keyed
 *   row goes out only from the instance holding the row, while every older pending row of its
 *   key is held by that same instance. (The README's stronger "at any time the leased pending
 *   rows of K belong to one instance" does not hold as a state: an instance that marks the
 *   oldest row FAILED still holds the key's later rows in the batch claimed behind it until it
 *   gives them back, and another instance may claim the oldest row as soon as it is due.
 *   That is harmless only because the first instance never sends them, which is what this checks.)
 * - SENT only for an acknowledged record of that event, on that topic, partition and offset.
 * - A mark, release or renewal lands only under the lease the checker saw granted last for
 *   that row, by the instance it was granted to.
 * - Nothing published is released: a row whose record (or dead letter) the broker
 *   acknowledged to the holder of its lease is marked, never given back for another send.
 */
import type { LoggedRecord } from "../fake-kafka.ts"
import type { FakeRow, FencedWrite } from "../fake-outbox-store.ts"
import type { Violation } from "./invariants.ts"

export interface StepChecker {
  readonly violations: Array<Violation>
  /** A claim leased these rows; `table` is the whole table after it. */
  readonly claimed: (by: string, now: number, rows: ReadonlyArray<FakeRow>, table: ReadonlyArray<FakeRow>) => void
  /** A fenced write landed on `row` (as it is after the write), named under `lease`. */
  readonly fenced: (write: FencedWrite, by: string, now: number, row: FakeRow, lease: string) => void
  /** `by` hands these records to the broker (they may land, or not). */
  readonly sending: (by: string, now: number, records: ReadonlyArray<{ readonly topic: string; readonly eventId: string }>) => void
  /** The broker acknowledged these records to `by`. */
  readonly acknowledged: (by: string, now: number, records: ReadonlyArray<LoggedRecord>) => void
  /** The instance's process is gone (a crash): what it still tries to send never arrives. */
  readonly crashed: (instance: string) => void
}

interface Held {
  readonly holder: string
  readonly until: number
}

const isPending = (r: FakeRow) => r.status === "NEW" || r.status === "FAILED"

export const makeStepChecker = (): StepChecker => {
  const violations: Array<Violation> = []
  const leases = new Map<number, Held>()
  const rowOfEvent = new Map<string, number>()
  /** `${eventId}|${topic}|${partition}|${offset}` of every acknowledged record. */
  const acks = new Set<string>()
  /** `${rowId}@${until}`: a record of the row was acknowledged to the holder of this lease. */
  const published = new Set<string>()
  const gone = new Set<string>()
  const fail = (invariant: string, now: number, detail: string) => {
    // A run that breaks a rule usually breaks it again at every step after; the first few say it.
    if (violations.length < 20) violations.push({ invariant, detail: `at ${now} ms: ${detail}` })
  }

  let table: ReadonlyArray<FakeRow> = []
  const rows = new Map<number, FakeRow>()

  return {
    violations,
    claimed: (by, now, claimed, all) => {
      table = all
      for (const row of claimed) {
        const before = leases.get(row.id)
        if (before !== undefined && before.until >= now) {
          fail(
            "a claim takes only rows nobody holds",
            now,
            `${by} claimed row ${row.id} under ${before.holder}'s lease until ${before.until}`,
          )
        }
        leases.set(row.id, { holder: by, until: row.lockedUntil ?? Number.NaN })
        rowOfEvent.set(row.eventId, row.id)
        rows.set(row.id, row)
      }
    },
    sending: (by, now, records) => {
      // A crashed process's sends never reach the broker.
      if (gone.has(by)) return
      for (const record of records) {
        const id = rowOfEvent.get(record.eventId)
        if (id === undefined) continue
        const held = leases.get(id)
        if (held?.holder !== by) {
          fail(
            "a row is sent only by the holder of its lease",
            now,
            `${by} sends row ${id} to ${record.topic}, held by ${held?.holder ?? "nobody"}`,
          )
          continue
        }
        const row = rows.get(id)!
        if (row.aggregateKey === null) continue
        for (const older of table) {
          if (older.id >= id) break
          if (older.aggregateKey !== row.aggregateKey || !isPending(older) || older.lockedBy === by) continue
          fail(
            "a key's row is sent only while its holder holds every older pending row of the key",
            now,
            `${by} sends row ${id} (key ${row.aggregateKey}) to ${record.topic} while row ${older.id} is ${older.status} and held by ${older.lockedBy ?? "nobody"}`,
          )
        }
      }
    },
    fenced: (write, by, now, row, lease) => {
      const held = leases.get(row.id)
      if (held === undefined || held.holder !== by || String(held.until) !== lease) {
        fail(
          "no mark, release or renewal lands without the live lease it names",
          now,
          `${write} of row ${row.id} by ${by} under lease ${lease} landed, but the row's lease is ${held === undefined ? "none" : `${held.holder}'s until ${held.until}`}`,
        )
      }
      if (write === "mark sent") {
        const d = row.delivery
        if (d === null || !acks.has(`${row.eventId}|${d.topic}|${d.partition}|${d.offset}`)) {
          fail("nothing becomes SENT without an acknowledged record of it", now, `row ${row.id} SENT at ${JSON.stringify(d)} without one`)
        }
      }
      if (write === "release" && held !== undefined && published.has(`${row.id}@${held.until}`)) {
        fail(
          "nothing published is released",
          now,
          `${by} released row ${row.id}, whose record the broker had acknowledged under that lease`,
        )
      }
      if (write === "renew") {
        const until = row.lockedUntil ?? Number.NaN
        if (held !== undefined && published.has(`${row.id}@${held.until}`)) published.add(`${row.id}@${until}`)
        leases.set(row.id, { holder: by, until })
      } else {
        leases.delete(row.id)
      }
    },
    acknowledged: (by, _now, records) => {
      for (const r of records) {
        acks.add(`${r.eventId}|${r.topic}|${r.partition}|${r.offset}`)
        const id = rowOfEvent.get(r.eventId)
        const held = id === undefined ? undefined : leases.get(id)
        if (held !== undefined && held.holder === by) published.add(`${id}@${held.until}`)
      }
    },
    crashed: (instance) => {
      gone.add(instance)
    },
  }
}
