import { Effect, Random } from "effect"
import { describe, expect, it } from "vitest"
import { retryDelayBounds, retryDelayMs } from "../../src/relay/retry-policy.ts"

const delays = (policy: { baseMs: number; maxMs: number }, n: number) =>
  Effect.runSync(
    Effect.forEach(
      Array.from({ length: n }, (_, i) => i + 1),
      (retry) => retryDelayMs({ backoffBaseMs: policy.baseMs, backoffMaxMs: policy.maxMs, maxAttempts: 100 }, retry),
    ).pipe(Random.withSeed(7)),
  )

describe("retry backoff", () => {
  it("grows exponentially with jitter of ±20 %", () => {
    const d = delays({ baseMs: 100, maxMs: 1_000_000 }, 6)
    d.forEach((ms, i) => {
      const nominal = 100 * 2 ** i
      expect(ms).toBeGreaterThanOrEqual(nominal * 0.8 - 1)
      expect(ms).toBeLessThanOrEqual(nominal * 1.2 + 1)
    })
  })

  it("never exceeds the cap, jitter included", () => {
    const d = delays({ baseMs: 500, maxMs: 3_000 }, 12)
    expect(Math.max(...d)).toBeLessThanOrEqual(3_000)
    expect(d.slice(-3).every((ms) => ms >= 3_000 * 0.8)).toBe(true)
  })

  it("stays within the bounds the simulation checks every delay against", () => {
    const policy = { baseMs: 50, maxMs: 2_000 }
    delays(policy, 10).forEach((ms, i) => {
      const { min, max } = retryDelayBounds({ backoffBaseMs: 50, backoffMaxMs: 2_000, maxAttempts: 100 }, i + 1)
      expect(ms).toBeGreaterThanOrEqual(min)
      expect(ms).toBeLessThanOrEqual(max)
    })
  })
})
