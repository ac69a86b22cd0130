/**
 * The bounds of the delay before retry number `retry` (1-based), read off the backoff
 * Schedule itself: its jitter is the only randomness in it and the delay grows with the
 * random draw, so stepping the Schedule with the draw fixed at its lowest (0) and highest (1)
 * gives the least and the most it can ever produce. Nothing here restates its formula.
 */
import { Clock, Duration, Effect, Random, Schedule } from "effect"
import type { RelayConfigShape } from "../../src/config/config.ts"
import { backoffSchedule } from "../../src/domain/backoff.ts"

type Policy = Pick<RelayConfigShape, "backoffBaseMs" | "backoffMaxMs">

const delayWithDraw = (policy: Policy, retry: number, draw: number) =>
  Effect.gen(function* () {
    const step = yield* Schedule.toStep(backoffSchedule({ baseMs: policy.backoffBaseMs, maxMs: policy.backoffMaxMs }))
    const now = yield* Clock.currentTimeMillis
    let delay = Duration.zero
    for (let i = 0; i < Math.max(1, retry); i++) {
      const [, d] = yield* Effect.orDie(step(now, undefined))
      delay = d
    }
    return Duration.toMillis(delay)
  }).pipe(Effect.provideService(Random.Random, { nextIntUnsafe: () => 0, nextDoubleUnsafe: () => draw }))

const cache = new Map<string, { readonly min: number; readonly max: number }>()

/** Whole milliseconds: the relay rounds the Schedule's delay. */
export const retryDelayBounds = (policy: Policy, retry: number): { readonly min: number; readonly max: number } => {
  const key = `${policy.backoffBaseMs}/${policy.backoffMaxMs}/${retry}`
  const known = cache.get(key)
  if (known !== undefined) return known
  const bounds = {
    min: Math.floor(Effect.runSync(delayWithDraw(policy, retry, 0))),
    max: Math.ceil(Effect.runSync(delayWithDraw(policy, retry, 1))),
  }
  cache.set(key, bounds)
  return bounds
}
