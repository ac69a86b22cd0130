import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { DEFAULT_TOPIC_MAP } from "../../src/domain/event-types.ts"
import type { ClaimedEvent } from "../../src/domain/outbox-event.ts"
import { planBatch } from "../../src/relay/publish-plan.ts"

const POLICY = { topicMap: DEFAULT_TOPIC_MAP, maxRecordBytes: 1_000_000, maxAttempts: 3 }

const eventArb = fc.record({
  key: fc.option(fc.constantFrom("k1", "k2", "k3"), { nil: null }),
  type: fc.constantFrom("search_click", "ac_select", "no_such_type"),
  attempts: fc.integer({ min: 0, max: 4 }),
  waiting: fc.boolean(),
  headers: fc.constantFrom("{}", '{"x":"y"}', '{"x":1}'),
  traceparent: fc.constantFrom(null, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "garbage"),
})

const batchArb = fc.array(eventArb, { maxLength: 30 }).map((drawn) =>
  drawn.map(
    (d, i): ClaimedEvent => ({
      id: String(i + 1),
      eventId: `00000000-0000-7000-8000-${String(i + 1).padStart(12, "0")}`,
      dedupKey: `dedup-${i + 1}`,
      eventType: d.type,
      aggregateKey: d.key,
      payload: "{}",
      headers: d.headers,
      oversize: null,
      requestId: null,
      traceparent: d.traceparent,
      attempts: d.attempts,
      waitingDeadLetter: d.waiting ? { reason: "attempts_exhausted", error: "gave up earlier" } : null,
      createdAtMs: 0,
      takenOverFrom: null,
      lease: "lease",
    }),
  ),
)

const heldKeysArb = fc.subarray(["k1", "k2", "k3"])

describe("the publish plan", () => {
  it("gives every event exactly one route", () => {
    fc.assert(
      fc.property(batchArb, heldKeysArb, (events, held) => {
        const plan = planBatch(events, (e) => e.aggregateKey !== null && held.includes(e.aggregateKey), POLICY)
        const routed = [
          ...plan.deadLetters.map((l) => l.event.id),
          ...plan.records.map((r) => r.event.id),
          ...plan.givenBack.map((e) => e.id),
        ]
        expect(routed.sort()).toEqual(events.map((e) => e.id).sort())
      }),
    )
  })

  it("gives back every event of a held key, and every later event of a key once one is given back", () => {
    fc.assert(
      fc.property(batchArb, heldKeysArb, (events, held) => {
        const plan = planBatch(events, (e) => e.aggregateKey !== null && held.includes(e.aggregateKey), POLICY)
        const back = new Set(plan.givenBack.map((e) => e.id))
        for (const e of events) if (e.aggregateKey !== null && held.includes(e.aggregateKey)) expect(back.has(e.id)).toBe(true)
        for (const e of plan.givenBack) {
          for (const later of events) {
            if (later.aggregateKey !== null && later.aggregateKey === e.aggregateKey && Number(later.id) > Number(e.id)) {
              expect(back.has(later.id)).toBe(true)
            }
          }
        }
      }),
    )
  })

  it("keeps records in id order, so a key's events go out in order", () => {
    fc.assert(
      fc.property(batchArb, (events) => {
        const ids = planBatch(events, () => false, POLICY).records.map((r) => Number(r.event.id))
        expect(ids).toEqual([...ids].sort((a, b) => a - b))
      }),
    )
  })

  it("sends a dead letter, never a record, for an event already dead, out of attempts, or impossible to build", () => {
    fc.assert(
      fc.property(batchArb, (events) => {
        const plan = planBatch(events, () => false, POLICY)
        for (const letter of plan.deadLetters) {
          const e = letter.event
          if (e.waitingDeadLetter !== null) expect(letter.reason).toBe(e.waitingDeadLetter.reason)
          else if (e.attempts >= POLICY.maxAttempts) expect(letter.reason).toBe("attempts_exhausted")
          else expect(["unknown_event_type", "invalid_record"]).toContain(letter.reason)
        }
        for (const { event } of plan.records) {
          expect(event.waitingDeadLetter).toBeNull()
          expect(event.attempts).toBeLessThan(POLICY.maxAttempts)
          expect(event.eventType).not.toBe("no_such_type")
        }
      }),
    )
  })

  it("names the events whose traceparent is dropped", () => {
    fc.assert(
      fc.property(batchArb, (events) => {
        const plan = planBatch(events, () => false, POLICY)
        expect(plan.invalidTraceparents.every((e) => e.traceparent === "garbage")).toBe(true)
        expect(plan.invalidTraceparents.length).toBe(plan.records.filter((r) => r.event.traceparent === "garbage").length)
      }),
    )
  })
})
