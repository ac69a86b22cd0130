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
