/**
 * The OutboxStore contract, as tests that run against any implementation: the PostgreSQL
 * store (test/integration/outbox-store-contract.test.ts) and the in-memory fake the
 * simulation uses (test/simulation/fake-outbox-store-contract.test.ts). One suite for both
 * is what lets the simulation trust the fake: it cannot drift from the real claim.
 */
import { expect } from "@effect/vitest"
import { Effect, type Scope } from "effect"
import type { DeadReason } from "../../src/domain/errors.ts"
import type { ClaimedEvent, EventStatus, NewEvent, RecordColumn } from "../../src/domain/outbox-event.ts"
import type { Lease, OutboxStore } from "../../src/outbox/outbox-store.ts"

export interface RowState {
  readonly status: EventStatus
  readonly attempts: number
  readonly lockedBy: string | null
  readonly deadReason: DeadReason | null
}

export interface StoreContractEnv {
  /** The store as instance `name` sees it; every instance shares one table. */
  readonly instance: (name: string) => Effect.Effect<OutboxStore["Service"], never, Scope.Scope>
  /** Lets time pass (the real database's clock, or the TestClock). */
  readonly advance: (ms: number) => Effect.Effect<void>
  readonly row: (id: string) => Effect.Effect<RowState>
  /** Lifts the table's row bounds (migration 7's constraints), as on a table whose rows predate them. */
  readonly dropRowLimits: Effect.Effect<void>
}

/** The settings every implementation runs the contract with. */
export const CONTRACT_LEASE_MS = 1_000
export const CONTRACT_MAX_RECORD_BYTES = 4_096

type Register = (name: string, body: (env: StoreContractEnv) => Effect.Effect<void, unknown, Scope.Scope>) => void

const event = (dedupKey: string, aggregateKey: string | null, payload: unknown = { n: dedupKey }): NewEvent => ({
  dedupKey,
  eventType: "search_click",
  aggregateKey,
  payload,
})

const ids = (events: ReadonlyArray<{ readonly id: string }>) => events.map((e) => e.id)
const lease = (e: ClaimedEvent): Lease => ({ id: e.id, lease: e.lease })

export const outboxStoreContract = (test: Register) => {
  test("claims due rows oldest first, up to the limit, each leased to one instance only", (env) =>
    Effect.gen(function* () {
      const a = yield* env.instance("instance-a")
      const b = yield* env.instance("instance-b")
      const { inserted } = yield* a.append([1, 2, 3, 4, 5].map((i) => event(`e${i}`, null)))
      expect(ids(yield* a.claimDue(3))).toEqual(inserted.slice(0, 3))
      expect(ids(yield* b.claimDue(10))).toEqual(inserted.slice(3))
      expect(yield* a.claimDue(10)).toEqual([])
      expect((yield* env.row(inserted[0]!)).lockedBy).toBe("instance-a")
    }))

  test("holds a key's later rows back while an older one is leased by another instance", (env) =>
    Effect.gen(function* () {
      const a = yield* env.instance("instance-a")
      const b = yield* env.instance("instance-b")
      const { inserted } = yield* a.append([event("k1", "K"), event("x", null), event("k2", "K")])
      const [k1, x, k2] = inserted as [string, string, string]
      const byB = yield* b.claimDue(1)
      expect(ids(byB)).toEqual([k1])
      expect(ids(yield* a.claimDue(10))).toEqual([x])
      yield* b.markSent([{ ...lease(byB[0]!), topic: "t", partition: 0, offset: "0" }])
      expect(ids(yield* a.claimDue(10))).toEqual([k2])
    }))

  test("lets an instance claim behind its own lease, and a whole key in one claim", (env) =>
    Effect.gen(function* () {
      const a = yield* env.instance("instance-a")
      const { inserted } = yield* a.append([event("k1", "K"), event("k2", "K"), event("k3", "K")])
      expect(ids(yield* a.claimDue(1))).toEqual([inserted[0]])
      expect(ids(yield* a.claimDue(10))).toEqual(inserted.slice(1))
    }))

  test("a claim past a cursor skips lower ids, yet the key check still sees them", (env) =>
    Effect.gen(function* () {
      const a = yield* env.instance("instance-a")
      const { inserted } = yield* a.append([event("k1", "K"), event("y", null), event("k2", "K")])
      const [k1, y] = inserted as [string, string, string]
      expect(ids(yield* a.claimDue(10, k1))).toEqual([y])
      expect(ids(yield* a.claimDue(10))).toEqual([k1, inserted[2]])
    }))

  test("a FAILED row waits for its retry time and holds its key back meanwhile", (env) =>
    Effect.gen(function* () {
      const a = yield* env.instance("instance-a")
      const { inserted } = yield* a.append([event("k1", "K"), event("k2", "K")])
      const [k1, k2] = inserted as [string, string]
      const claimed = yield* a.claimDue(1)
      expect(ids(claimed)).toEqual([k1])
      const failed = yield* a.markFailed([
        { ...lease(claimed[0]!), error: "broker down", retryInMs: 600, countsAttempt: true, deadReason: null },
      ])
      expect(failed).toEqual({ marked: [k1], lost: [] })
      expect(yield* env.row(k1)).toMatchObject({ status: "FAILED", attempts: 1, lockedBy: null })
      expect(yield* a.claimDue(10)).toEqual([])
      yield* env.advance(900)
      expect(ids(yield* a.claimDue(10))).toEqual([k1, k2])
    }))

  test("an expired lease is taken over by another instance, and the first one's mark is then lost", (env) =>
    Effect.gen(function* () {
      const a = yield* env.instance("instance-a")
      const b = yield* env.instance("instance-b")
      const { inserted } = yield* a.append([event("e", "K")])
      const e = inserted[0]!
      const byA = yield* a.claimDue(10)
      expect(ids(byA)).toEqual([e])
      expect(yield* b.claimDue(10)).toEqual([])
      yield* env.advance(CONTRACT_LEASE_MS + 300)
      const taken = yield* b.claimDue(10)
      expect(taken.map((t) => [t.id, t.takenOverFrom])).toEqual([[e, "instance-a"]])
      expect((yield* a.leaseHolders([e])).get(e)).toBe("instance-b")
      expect(yield* a.markSent([{ ...lease(byA[0]!), topic: "t", partition: 0, offset: "1" }])).toEqual({ marked: [], lost: [e] })
      expect(yield* b.markSent([{ ...lease(taken[0]!), topic: "t", partition: 0, offset: "2" }])).toEqual({ marked: [e], lost: [] })
      expect((yield* env.row(e)).status).toBe("SENT")
    }))

  test("marks only rows the instance holds, and DEAD keeps its reason", (env) =>
    Effect.gen(function* () {
      const a = yield* env.instance("instance-a")
      const b = yield* env.instance("instance-b")
      const { inserted } = yield* a.append([event("d1", null), event("d2", null)])
      const [d1, d2] = inserted as [string, string]
      const held = lease((yield* a.claimDue(10))[0]!)
      expect(yield* b.markDead([{ ...held, reason: "unknown_event_type", error: "no topic", countsAttempt: true }])).toEqual({
        marked: [],
        lost: [d1],
      })
      expect(yield* a.markDead([{ ...held, reason: "unknown_event_type", error: "no topic", countsAttempt: true }])).toEqual({
        marked: [d1],
        lost: [],
      })
      expect(yield* env.row(d1)).toEqual({ status: "DEAD", attempts: 1, lockedBy: null, deadReason: "unknown_event_type" })
      // A marked row is not marked twice.
      expect(yield* a.markSent([{ ...held, topic: "t", partition: 0, offset: "0" }])).toEqual({ marked: [], lost: [d1] })
      expect((yield* env.row(d2)).lockedBy).toBe("instance-a")
    }))

  test("release gives back only the instance's own leases, and the row is claimable at once", (env) =>
    Effect.gen(function* () {
      const a = yield* env.instance("instance-a")
      const b = yield* env.instance("instance-b")
      const { inserted } = yield* a.append([event("r", "K")])
      const r = inserted[0]!
      const held = (yield* a.claimDue(10)).map(lease)
      expect(yield* b.release(held)).toBe(0)
      expect(yield* a.release(held)).toBe(1)
      expect(yield* env.row(r)).toMatchObject({ status: "NEW", attempts: 0, lockedBy: null })
      const again = yield* b.claimDue(10)
      expect(again.map((t) => [t.id, t.takenOverFrom])).toEqual([[r, null]])
    }))

  test("a late mark or release from an earlier claim of the same instance changes nothing once its lease was claimed again", (env) =>
    Effect.gen(function* () {
      const a = yield* env.instance("instance-a")
      const { inserted } = yield* a.append([event("s1", "K"), event("s2", "K"), event("s3", null)])
      const [s1, s2, s3] = inserted as [string, string, string]
      const first = yield* a.claimDue(10)
      expect(ids(first)).toEqual([s1, s2, s3])
      // The first claim's batch is still in flight when its lease runs out; the instance claims the rows again.
      yield* env.advance(CONTRACT_LEASE_MS + 300)
      const second = yield* a.claimDue(10)
      expect(ids(second)).toEqual([s1, s2, s3])
      const [old1, old2, old3] = first.map(lease) as [Lease, Lease, Lease]
      expect(yield* a.markSent([{ ...old1, topic: "t", partition: 0, offset: "0" }])).toEqual({ marked: [], lost: [s1] })
      expect(yield* a.markFailed([{ ...old2, error: "timeout", retryInMs: 600, countsAttempt: true, deadReason: null }])).toEqual({
        marked: [],
        lost: [s2],
      })
      expect(yield* a.release([old3])).toBe(0)
      // The second claim still holds all three, untouched, and its own marks land.
      for (const id of [s1, s2, s3]) expect(yield* env.row(id)).toMatchObject({ status: "NEW", attempts: 0, lockedBy: "instance-a" })
      expect(yield* a.markSent(second.map((e, i) => ({ ...lease(e), topic: "t", partition: 0, offset: String(i) })))).toEqual({
        marked: [s1, s2, s3],
        lost: [],
      })
    }))

  test("renews only leases still held under the lease given, and marks then need the new lease", (env) =>
    Effect.gen(function* () {
      const a = yield* env.instance("instance-a")
      const b = yield* env.instance("instance-b")
      const { inserted } = yield* a.append([event("r1", "K"), event("r2", null)])
      const [r1, r2] = inserted as [string, string]
      const claimed = yield* a.claimDue(10)
      yield* env.advance(CONTRACT_LEASE_MS / 2)
      const renewed = yield* a.renewLeases(claimed.map(lease))
      expect(ids(renewed).sort()).toEqual([r1, r2].sort())
      expect(renewed.every((l) => l.lease !== claimed[0]!.lease)).toBe(true)
      // Past the first lease but within the renewed one: nobody can take the rows over.
      yield* env.advance(CONTRACT_LEASE_MS / 2 + 300)
      expect(yield* b.claimDue(10)).toEqual([])
      // The old lease no longer fences anything; the new one does.
      expect(yield* a.release(claimed.map(lease))).toBe(0)
      expect([...(yield* a.markSent(renewed.map((l) => ({ ...l, topic: "t", partition: 0, offset: "0" })))).marked].sort()).toEqual(
        [r1, r2].sort(),
      )
      // A renewal of rows no longer held renews nothing.
      expect(yield* a.renewLeases(renewed)).toEqual([])
    }))

  test("a dead letter that waits for its topic keeps the row FAILED with its reason, and costs no attempt", (env) =>
    Effect.gen(function* () {
      const a = yield* env.instance("instance-a")
      const { inserted } = yield* a.append([event("w1", "K")])
      const [w1] = inserted as [string]
      const first = yield* a.claimDue(10)
      yield* a.markFailed([{ ...lease(first[0]!), error: "no DLQ", retryInMs: 0, countsAttempt: true, deadReason: "attempts_exhausted" }])
      expect(yield* env.row(w1)).toMatchObject({ status: "FAILED", attempts: 1, deadReason: "attempts_exhausted" })
      const again = yield* a.claimDue(10)
      expect(again[0]!.waitingDeadLetter).toEqual({ reason: "attempts_exhausted", error: "no DLQ" })
      yield* a.markFailed([{ ...lease(again[0]!), error: "no DLQ", retryInMs: 0, countsAttempt: false, deadReason: "attempts_exhausted" }])
      expect(yield* env.row(w1)).toMatchObject({ status: "FAILED", attempts: 1, deadReason: "attempts_exhausted" })
      const last = yield* a.claimDue(10)
      yield* a.markDead([{ ...lease(last[0]!), reason: "attempts_exhausted", error: "no DLQ", countsAttempt: false }])
      expect(yield* env.row(w1)).toMatchObject({ status: "DEAD", attempts: 1, deadReason: "attempts_exhausted" })
    }))

  test("settles a row DEAD unmarkable only under its lease", (env) =>
    Effect.gen(function* () {
      const a = yield* env.instance("instance-a")
      const { inserted } = yield* a.append([event("u1", "K"), event("u2", "K")])
      const [u1, u2] = inserted as [string, string]
      const claimed = yield* a.claimDue(10)
      const result = yield* a.settleUnmarkable([
        { ...lease(claimed[0]!), error: "mark refused" },
        { id: u2, lease: "2000-01-01 00:00:00+00", error: "not under this lease" },
      ])
      expect(result).toEqual({ marked: [u1], lost: [u2] })
      expect(yield* env.row(u1)).toMatchObject({ status: "DEAD", deadReason: "unmarkable", lockedBy: null })
      expect(yield* env.row(u2)).toMatchObject({ status: "NEW", lockedBy: "instance-a" })
    }))

  test("claims a row too large to carry without its content, and says how large it is", (env) =>
    Effect.gen(function* () {
      const a = yield* env.instance("instance-a")
      const blob = "x".repeat(CONTRACT_MAX_RECORD_BYTES * 3)
      const { inserted } = yield* a.append([event("big", "K", { blob }), event("small", "K")])
      const [big, small] = yield* a.claimDue(10)
      expect(big!.id).toBe(inserted[0])
      expect(big!.oversize).toEqual({ bytes: expect.any(Number), column: "payload" })
      expect(big!.oversize!.bytes).toBeGreaterThan(CONTRACT_MAX_RECORD_BYTES * 3)
      expect(big!.payload).not.toContain(blob)
      // Columns within their bounds come whole: the dead letter names the event by them.
      expect([big!.dedupKey, big!.aggregateKey, big!.eventType]).toEqual(["big", "K", "search_click"])
      expect(small!.oversize).toBeNull()
      expect(JSON.parse(small!.payload)).toEqual({ n: "small" })
    }))

  // Rows the table's bounds (migration 7) would refuse: from before them, or with them dropped.
  // Whichever column makes a row too large, the claim names it, fetches none of it beyond its
  // bound, and claims the row's neighbours as usual.
  const huge = "h".repeat(CONTRACT_MAX_RECORD_BYTES * 3)
  const hostile: ReadonlyArray<readonly [RecordColumn, NewEvent, (e: ClaimedEvent) => string | null]> = [
    ["payload", { ...event("c-payload", "K-payload"), payload: { huge } }, (e) => e.payload],
    ["headers", { ...event("c-headers", "K-headers"), headers: { huge } }, (e) => e.headers],
    ["event_type", { ...event("c-event_type", "K-event_type"), eventType: `T-${huge}` }, (e) => e.eventType],
    ["aggregate_key", event("c-aggregate_key", `K-${huge}`), (e) => e.aggregateKey],
    ["dedup_key", event(`c-${huge}`, "K-dedup_key", { n: "c-dedup_key" }), (e) => e.dedupKey],
    ["request_id", { ...event("c-request_id", "K-request_id"), requestId: `R-${huge}` }, (e) => e.requestId],
    ["traceparent", { ...event("c-traceparent", "K-traceparent"), traceparent: `P-${huge}` }, (e) => e.traceparent],
  ]
  for (const [column, row, read] of hostile) {
    test(`claims a row whose ${column} is too large to carry without fetching it, and names the column`, (env) =>
      Effect.gen(function* () {
        const a = yield* env.instance("instance-a")
        yield* env.dropRowLimits
        const { inserted } = yield* a.append([event("before", "K-other"), row, event("after", "K-other")])
        const claimed = yield* a.claimDue(10)
        expect(ids(claimed)).toEqual(inserted)
        const [before, big, after] = claimed as [ClaimedEvent, ClaimedEvent, ClaimedEvent]
        expect(big.oversize?.column).toBe(column)
        expect(big.oversize!.bytes).toBeGreaterThan(huge.length)
        expect([big.payload, big.headers]).toEqual(["null", "{}"])
        // Nothing of the column comes whole: a prefix and its size stand in for it.
        const fetched = read(big) ?? ""
        expect(fetched.length).toBeLessThan(200)
        if (column !== "payload" && column !== "headers") {
          expect(fetched).toBe(`${fetched[0]}-${"h".repeat(62)}… (${huge.length + 2} bytes)`)
        }
        expect([before.oversize, after.oversize]).toEqual([null, null])
      }))
  }

  test("a row too large only as a whole is named by its largest column, and keeps its columns within their bounds", (env) =>
    Effect.gen(function* () {
      const a = yield* env.instance("instance-a")
      const half = CONTRACT_MAX_RECORD_BYTES / 2
      yield* a.append([
        {
          ...event("sum", "K"),
          payload: { p: "p".repeat(half - 50) },
          headers: { h: "h".repeat(half) },
          requestId: "r".repeat(200),
        },
      ])
      const [sum] = yield* a.claimDue(10)
      expect(sum!.oversize?.column).toBe("headers")
      expect(sum!.requestId).toBe("r".repeat(200))
      expect([sum!.dedupKey, sum!.aggregateKey]).toEqual(["sum", "K"])
    }))

  test("appending a dedup_key that exists is a no-op", (env) =>
    Effect.gen(function* () {
      const a = yield* env.instance("instance-a")
      expect((yield* a.append([event("once", null)])).duplicates).toBe(0)
      const again = yield* a.append([event("once", null), event("twice", null)])
      expect(again.duplicates).toBe(1)
      expect(again.inserted).toHaveLength(1)
      expect(yield* a.countByStatus).toEqual({ NEW: 2, SENT: 0, FAILED: 0, DEAD: 0 })
    }))
}
