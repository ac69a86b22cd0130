/** The retry policy alone: which failures die, when, and how long the others wait. */
import { Effect, Random } from "effect"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { DatabaseError, InvalidEvent, KafkaRejected, KafkaUnavailable, KafkaUnknownTopic } from "../../src/domain/errors.ts"
import { decide, exhaustedBefore, markRetry, type PublishFailure } from "../../src/relay/retry-policy.ts"
import { retryDelayBounds } from "../support/backoff-bounds.ts"

const policyArb = fc.record({
  maxAttempts: fc.integer({ min: 1, max: 10 }),
  backoffBaseMs: fc.integer({ min: 1, max: 1_000 }),
  backoffMaxMs: fc.integer({ min: 1_000, max: 60_000 }),
})

type Policy = { readonly maxAttempts: number; readonly backoffBaseMs: number; readonly backoffMaxMs: number }

const unavailable = new KafkaUnavailable({ reason: "unreachable", message: "down", cause: null })
const unknownTopic = new KafkaUnknownTopic({ topics: ["ghost"], message: "UNKNOWN_TOPIC_OR_PARTITION ghost", cause: null })
const tooLarge = new KafkaRejected({ reason: "message_too_large", message: "too large", cause: null })
const corrupt = new KafkaRejected({ reason: "invalid_record", message: "corrupt", cause: null })
const unmapped = new InvalidEvent({ reason: "unknown_event_type", message: "no topic" })
const dlqDown = { _tag: "DeadLetterUnavailable", message: "dead-letter topic unreachable" } as const

const decideWith = (attempts: number, failure: PublishFailure, policy: Policy, seed: number) =>
  Effect.runSync(decide(attempts, failure, policy).pipe(Random.withSeed(seed)))

describe("decide", () => {
  it("kills a record Kafka refuses, or a row that cannot be a record, at once and with its own reason", () => {
    fc.assert(
      fc.property(
        policyArb,
        fc.integer({ min: 0, max: 20 }),
        fc.constantFrom(tooLarge, corrupt, unmapped),
        fc.nat(),
        (policy, attempts, failure, seed) => {
          expect(decideWith(attempts, failure, policy, seed)).toEqual({ _tag: "Dead", reason: failure.reason, error: failure.message })
        },
      ),
    )
  })

  it("retries an unreachable broker or a missing topic until the attempt that makes MAX_ATTEMPTS, which dies attempts_exhausted", () => {
    fc.assert(
      fc.property(
        policyArb,
        fc.integer({ min: 0, max: 12 }),
        fc.constantFrom<PublishFailure>(unavailable, unknownTopic),
        fc.nat(),
        (policy, attempts, failure, seed) => {
          const decision = decideWith(attempts, failure, policy, seed)
          if (attempts + 1 >= policy.maxAttempts) {
            expect(decision).toMatchObject({ _tag: "Dead", reason: "attempts_exhausted" })
            expect(decision.error).toContain(`after ${attempts + 1} attempts`)
          } else {
            expect(decision._tag).toBe("RetryLater")
          }
        },
      ),
    )
  })

  it("never kills an event for an unreachable dead-letter topic: it waits, however many attempts it has", () => {
    fc.assert(
      fc.property(policyArb, fc.integer({ min: 0, max: 50 }), fc.nat(), (policy, attempts, seed) => {
        expect(decideWith(attempts, dlqDown, policy, seed)).toMatchObject({ _tag: "RetryLater", error: dlqDown.message })
      }),
    )
  })

  it("waits the backoff Schedule's delay for retry number attempts + 1", () => {
    fc.assert(
      fc.property(
        policyArb,
        fc.integer({ min: 0, max: 12 }),
        fc.constantFrom<PublishFailure>(unavailable, unknownTopic, dlqDown),
        fc.nat(),
        (policy, attempts, failure, seed) => {
          const decision = decideWith(attempts, failure, { ...policy, maxAttempts: 100 }, seed)
          if (decision._tag !== "RetryLater") throw new Error("expected a retry")
          const { min, max } = retryDelayBounds(policy, attempts + 1)
          expect(decision.delayMs).toBeGreaterThanOrEqual(min)
          expect(decision.delayMs).toBeLessThanOrEqual(max)
        },
      ),
    )
  })
})

describe("exhaustedBefore", () => {
  it("says dead exactly when the attempts already reached MAX_ATTEMPTS", () => {
    fc.assert(
      fc.property(policyArb, fc.integer({ min: 0, max: 20 }), (policy, attempts) => {
        const verdict = exhaustedBefore(attempts, policy)
        if (attempts >= policy.maxAttempts) expect(verdict).toMatchObject({ _tag: "Dead", reason: "attempts_exhausted" })
        else expect(verdict).toBeUndefined()
      }),
    )
  })
})

describe("markRetry", () => {
  it("rides out an outage or a lost race, and gives up at once on a data or programming error", () => {
    const error = (fault: DatabaseError["fault"]) => new DatabaseError({ operation: "mark sent", message: fault, fault, cause: null })
    const { while: retries } = markRetry(3_000)
    expect(retries(error("outage"))).toBe(true)
    expect(retries(error("conflict"))).toBe(true)
    expect(retries(error("data"))).toBe(false)
    expect(retries(error("programming"))).toBe(false)
  })
})
