/**
 * One backoff policy for everything that waits after a failure: an event's next
 * attempt, and the loop's reconnects to PostgreSQL or Kafka. Exponential (×2),
 * jittered (×0.8–1.2), and capped hard (jitter is applied after the cap, so the cap
 * is applied again).
 */
import { Duration, Effect, Schedule } from "effect"

export interface BackoffPolicy {
  readonly baseMs: number
  readonly maxMs: number
}

export const backoffSchedule = (policy: BackoffPolicy) =>
  Schedule.exponential(Duration.millis(policy.baseMs), 2).pipe(
    (exponential) => Schedule.min([exponential, Schedule.spaced(Duration.millis(policy.maxMs))]),
    Schedule.jittered,
    Schedule.modifyDelay(({ duration }) => Effect.succeed(Duration.min(duration, Duration.millis(policy.maxMs)))),
  )

/** The delay before retry number `retry` (1-based), read off the same schedule the loop uses. */
export const retryDelayMs = Effect.fnUntraced(function* (policy: BackoffPolicy, retry: number) {
  const step = yield* Schedule.toStep(backoffSchedule(policy))
  let delay = Duration.zero
  const now = Date.now()
  for (let i = 0; i < Math.max(1, retry); i++) {
    // The schedule never ends, so a step always yields a delay.
    const [, d] = yield* Effect.orDie(step(now, undefined))
    delay = d
  }
  return Math.round(Duration.toMillis(delay))
})
