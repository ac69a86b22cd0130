/** The pipeline coordinator alone: admission, hold-backs and what a stop gives back. */
import { Effect, Fiber } from "effect"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import type { ClaimedEvent } from "../../src/domain/outbox-event.ts"
import type { Lease } from "../../src/outbox/outbox-store.ts"
import { makePipelineCoordinator, type PipelineCoordinator } from "../../src/relay/pipeline-coordinator.ts"

const event = (id: string, lease: string, aggregateKey: string | null = null): ClaimedEvent => ({
  id,
  eventId: `event-${id}`,
  dedupKey: `dedup-${id}`,
  eventType: "search_click",
  aggregateKey,
  payload: "{}",
  headers: "{}",
  oversizeBytes: null,
  requestId: null,
  traceparent: null,
  attempts: 0,
  waitingDeadLetter: null,
  createdAtMs: 0,
  takenOverFrom: null,
  lease,
})

const run = <A>(f: (c: PipelineCoordinator) => Effect.Effect<A>) => Effect.runPromise(Effect.flatMap(makePipelineCoordinator, f))
const sorted = (leases: ReadonlyArray<Lease>) => [...leases].sort((a, b) => a.id.localeCompare(b.id))

describe("pipeline coordinator", () => {
  it("admits claims with increasing sequence numbers", async () => {
    const sequences = await run((c) => Effect.all([c.admitClaim, c.admitClaim, c.admitClaim]))
    expect(sequences).toEqual([1, 2, 3])
  })

  it("holds a key back in every batch admitted so far once an event of it is left unsent, and only that key", async () => {
    const held = await run((c) =>
      Effect.gen(function* () {
        const first = yield* c.admitClaim
        const second = yield* c.admitClaim
        yield* c.leftUnsent(["K", null])
        const inFirst = yield* c.holdBackIn(first)
        const inSecond = yield* c.holdBackIn(second)
        return [inFirst("K"), inSecond("K"), inSecond("other"), inSecond(null)]
      }),
    )
    expect(held).toEqual([true, true, false, false])
  })

  it("after a hold-back, admits no claim until every batch in flight has finished, then forgets the hold-back", async () => {
    const outcome = await run((c) =>
      Effect.gen(function* () {
        yield* c.admitClaim
        const second = yield* c.admitClaim
        yield* c.leftUnsent(["K"])
        const waiting = yield* Effect.forkChild(c.admitClaim)
        yield* Effect.yieldNow
        const whileOneInFlight: Array<boolean> = []
        yield* c.finished([])
        yield* Effect.yieldNow
        whileOneInFlight.push(waiting.pollUnsafe() === undefined)
        yield* c.finished([])
        const third = yield* Fiber.join(waiting)
        const heldAfter = (yield* c.holdBackIn(third))("K")
        return { second, third, stillWaitingWithOneInFlight: whileOneInFlight[0], heldAfter }
      }),
    )
    expect(outcome).toEqual({ second: 2, third: 3, stillWaitingWithOneInFlight: true, heldAfter: false })
  })

  it("does not let a publish or finish under an old lease strike the row's newer claim", async () => {
    const unpublished = await run((c) =>
      Effect.gen(function* () {
        yield* c.claimed([event("1", "lease-a")])
        // The lease expired in flight and a later batch claimed the row again.
        yield* c.claimed([event("1", "lease-b")])
        yield* c.published([{ id: "1", lease: "lease-a" }])
        yield* c.finished([{ id: "1", lease: "lease-a" }])
        return yield* c.unpublished
      }),
    )
    expect(unpublished).toEqual([{ id: "1", lease: "lease-b" }])
  })

  it("gives back under the renewed lease, and a renewal never brings back a published row", async () => {
    const unpublished = await run((c) =>
      Effect.gen(function* () {
        yield* c.claimed([event("1", "a1"), event("2", "a2")])
        yield* c.published([{ id: "2", lease: "a2" }])
        yield* c.renewed([
          { id: "1", lease: "b1" },
          { id: "2", lease: "b2" },
        ])
        return yield* c.unpublished
      }),
    )
    expect(unpublished).toEqual([{ id: "1", lease: "b1" }])
  })

  type Op =
    | { readonly _tag: "claim"; readonly ids: ReadonlyArray<number> }
    | { readonly _tag: "publish"; readonly ids: ReadonlyArray<number> }
    | { readonly _tag: "renew"; readonly ids: ReadonlyArray<number> }
    | { readonly _tag: "finish"; readonly ids: ReadonlyArray<number> }
    | { readonly _tag: "unsent"; readonly keys: ReadonlyArray<string> }

  const ids = fc.uniqueArray(fc.integer({ min: 1, max: 8 }), { maxLength: 4 })
  const opArb: fc.Arbitrary<Op> = fc.oneof(
    ids.map((i) => ({ _tag: "claim", ids: i }) as const),
    ids.map((i) => ({ _tag: "publish", ids: i }) as const),
    ids.map((i) => ({ _tag: "renew", ids: i }) as const),
    ids.map((i) => ({ _tag: "finish", ids: i }) as const),
    fc.subarray(["A", "B"]).map((keys) => ({ _tag: "unsent", keys }) as const),
  )

  it("gives back exactly the rows claimed and not yet published or finished, under their latest lease, whatever the order of calls", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { maxLength: 40 }), async (ops) => {
        // The model: the lease each row was last claimed under, and the rows a stop must give back.
        const current = new Map<number, string>()
        const expected = new Map<number, string>()
        let version = 0
        const actual = await run((c) =>
          Effect.gen(function* () {
            for (const op of ops) {
              switch (op._tag) {
                case "claim": {
                  const events = op.ids.map((id) => event(String(id), `v${++version}`))
                  for (const e of events) {
                    current.set(Number(e.id), e.lease)
                    expected.set(Number(e.id), e.lease)
                  }
                  yield* c.claimed(events)
                  break
                }
                case "publish":
                case "finish": {
                  const leases = op.ids.filter((id) => current.has(id)).map((id) => ({ id: String(id), lease: current.get(id)! }))
                  for (const l of leases) expected.delete(Number(l.id))
                  yield* op._tag === "publish" ? c.published(leases) : c.finished(leases)
                  break
                }
                case "renew": {
                  const leases = op.ids.filter((id) => current.has(id)).map((id) => ({ id: String(id), lease: `v${++version}` }))
                  for (const l of leases) {
                    current.set(Number(l.id), l.lease)
                    if (expected.has(Number(l.id))) expected.set(Number(l.id), l.lease)
                  }
                  yield* c.renewed(leases)
                  break
                }
                case "unsent":
                  yield* c.leftUnsent(op.keys)
                  break
              }
            }
            return yield* c.unpublished
          }),
        )
        expect(sorted(actual)).toEqual(sorted([...expected].map(([id, lease]) => ({ id: String(id), lease }))))
      }),
    )
  })

  it("holds a key back in batch n exactly when an event of it was left unsent after batch n was admitted and before the pipeline drained", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.oneof(fc.constant("admit" as const), fc.constant("finish" as const), fc.constantFrom("A", "B")), { maxLength: 30 }),
        async (steps) => {
          await run((c) =>
            Effect.gen(function* () {
              let inFlight = 0
              let awaiting = false
              const admitted: Array<number> = []
              const heldThrough = new Map<string, number>()
              for (const step of steps) {
                if (step === "admit") {
                  // A real claim would wait here; the model only admits when the coordinator would.
                  if (awaiting) continue
                  admitted.push(yield* c.admitClaim)
                  inFlight++
                } else if (step === "finish") {
                  if (inFlight === 0) continue
                  yield* c.finished([])
                  inFlight--
                  if (inFlight === 0) {
                    awaiting = false
                    heldThrough.clear()
                  }
                } else {
                  yield* c.leftUnsent([step])
                  heldThrough.set(step, admitted.at(-1) ?? 0)
                  awaiting = true
                }
                for (const sequence of admitted) {
                  const held = yield* c.holdBackIn(sequence)
                  for (const key of ["A", "B"]) expect(held(key)).toBe((heldThrough.get(key) ?? 0) >= sequence)
                }
              }
            }),
          )
        },
      ),
    )
  })
})
