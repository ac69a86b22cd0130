/** The pipeline coordinator alone: admission, hold-backs and what a stop gives back. */
import { Effect, Fiber } from "effect"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import type { ClaimedEvent } from "../../src/domain/outbox-event.ts"
import { makePipelineCoordinator, type PipelineCoordinator } from "../../src/relay/pipeline-coordinator.ts"

const event = (id: string, lease: string, aggregateKey: string | null = null): ClaimedEvent => ({
  id,
  eventId: `event-${id}`,
  dedupKey: `dedup-${id}`,
  eventType: "search_click",
  aggregateKey,
  payload: "{}",
  headers: "{}",
  oversize: null,
  requestId: null,
  traceparent: null,
  attempts: 0,
  waitingDeadLetter: null,
  createdAtMs: 0,
  takenOverFrom: null,
  lease,
})

const run = <A>(f: (c: PipelineCoordinator) => Effect.Effect<A>) => Effect.runPromise(Effect.flatMap(makePipelineCoordinator, f))

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
        const first = yield* c.admitClaim
        const second = yield* c.admitClaim
        yield* c.leftUnsent(["K"])
        const waiting = yield* Effect.forkChild(c.admitClaim)
        yield* Effect.yieldNow
        yield* c.finished(first)
        yield* Effect.yieldNow
        const stillWaitingWithOneInFlight = waiting.pollUnsafe() === undefined
        yield* c.finished(second)
        const third = yield* Fiber.join(waiting)
        const heldAfter = (yield* c.holdBackIn(third))("K")
        return { third, stillWaitingWithOneInFlight, heldAfter }
      }),
    )
    expect(outcome).toEqual({ third: 3, stillWaitingWithOneInFlight: true, heldAfter: false })
  })

  it("does not let the earlier batch's publish take a row that a later batch claimed again under a newer lease", async () => {
    const outcome = await run((c) =>
      Effect.gen(function* () {
        yield* c.claimed(1, [event("1", "lease-a"), event("2", "lease-a")], 1_000)
        // Row 1's lease expired in flight and batch 2 claimed it again.
        yield* c.claimed(2, [event("1", "lease-b")], 2_000)
        const taken = yield* c.published(1)
        return { taken: [...taken], left: [...(yield* c.unpublished)].map(([id, held]) => [id, held.lease, held.sequence]) }
      }),
    )
    expect(outcome).toEqual({ taken: [["2", "lease-a"]], left: [["1", "lease-b", 2]] })
  })

  it("hands a batch's marks the renewed leases, and ignores a renewal from a lease the row no longer has", async () => {
    const taken = await run((c) =>
      Effect.gen(function* () {
        yield* c.claimed(1, [event("1", "a1"), event("2", "a2")], 1_000)
        yield* c.renewed(
          [
            { id: "1", from: "a1", to: "b1" },
            { id: "2", from: "stale", to: "b2" },
          ],
          4_000,
        )
        const expiry = (yield* c.heldBy(1)).get("1")?.expiresAt
        return { leases: [...(yield* c.published(1))], expiry, left: (yield* c.unpublished).size }
      }),
    )
    expect(taken).toEqual({
      leases: [
        ["1", "b1"],
        ["2", "a2"],
      ],
      expiry: 4_000,
      left: 0,
    })
  })

  type Op =
    | { readonly _tag: "claim"; readonly ids: ReadonlyArray<number> }
    | { readonly _tag: "publish"; readonly batch: number }
    | { readonly _tag: "finish"; readonly batch: number }
    | { readonly _tag: "renew"; readonly ids: ReadonlyArray<number>; readonly stale: boolean }

  const ids = fc.uniqueArray(fc.integer({ min: 1, max: 8 }), { maxLength: 4 })
  const opArb: fc.Arbitrary<Op> = fc.oneof(
    ids.map((i) => ({ _tag: "claim", ids: i }) as const),
    fc.integer({ min: 1, max: 6 }).map((batch) => ({ _tag: "publish", batch }) as const),
    fc.integer({ min: 1, max: 6 }).map((batch) => ({ _tag: "finish", batch }) as const),
    fc.tuple(ids, fc.boolean()).map(([i, stale]) => ({ _tag: "renew", ids: i, stale }) as const),
  )

  it("gives back exactly the rows claimed and not yet published or finished, under their latest lease, whatever the order of calls", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { maxLength: 40 }), async (ops) => {
        // The model: per row, the lease and batch it is held under while a stop would give it back.
        const expected = new Map<string, { lease: string; sequence: number }>()
        let version = 0
        let batch = 0
        const actual = await run((c) =>
          Effect.gen(function* () {
            for (const op of ops) {
              switch (op._tag) {
                case "claim": {
                  batch++
                  const events = op.ids.map((id) => event(String(id), `v${++version}`))
                  for (const e of events) expected.set(e.id, { lease: e.lease, sequence: batch })
                  yield* c.claimed(batch, events, 0)
                  break
                }
                case "publish":
                case "finish": {
                  const taken = new Map(
                    [...expected].filter(([, held]) => held.sequence === op.batch).map(([id, held]) => [id, held.lease]),
                  )
                  for (const id of taken.keys()) expected.delete(id)
                  if (op._tag === "publish") expect(yield* c.published(op.batch)).toEqual(taken)
                  else yield* c.finished(op.batch)
                  break
                }
                case "renew": {
                  const renewals = op.ids.map((id) => ({
                    id: String(id),
                    from: op.stale ? "stale" : (expected.get(String(id))?.lease ?? "none"),
                    to: `v${++version}`,
                  }))
                  for (const r of renewals) {
                    const held = expected.get(r.id)
                    if (held?.lease === r.from) expected.set(r.id, { ...held, lease: r.to })
                  }
                  yield* c.renewed(renewals, 0)
                  break
                }
              }
            }
            return yield* c.unpublished
          }),
        )
        expect(new Map([...actual].map(([id, held]) => [id, { lease: held.lease, sequence: held.sequence }]))).toEqual(expected)
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
                  yield* c.finished(admitted[admitted.length - inFlight]!)
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
