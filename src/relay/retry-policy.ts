/**
 * The one place that decides what a failure means for an event: try again after a delay,
 * or give up with a reason. Publishing asks it about every event Kafka did not take;
 * marking asks it how long a database hiccup may be ridden out. Nothing else decides.
 */
import { Clock, Duration, Effect, Schedule } from "effect"
import type { RelayConfigShape } from "../config/config.ts"
import { backoffSchedule } from "../domain/backoff.ts"
import type { DatabaseError, DeadReason, InvalidEvent, KafkaPublishError } from "../domain/errors.ts"

/** What went wrong for one event on this attempt. */
export type PublishFailure =
  | KafkaPublishError
  | InvalidEvent
  /** The event had to go to the dead-letter topic, and that topic could not be reached. */
  | { readonly _tag: "DeadLetterUnavailable"; readonly message: string }

export type RetryDecision =
  | { readonly _tag: "RetryLater"; readonly delayMs: number; readonly error: string }
  | { readonly _tag: "Dead"; readonly reason: DeadReason; readonly error: string }

type Policy = Pick<RelayConfigShape, "maxAttempts" | "backoffBaseMs" | "backoffMaxMs">

/**
 * `attempts`: failed attempts before this one. Records Kafka refuses and rows that cannot be
 * records die at once (no retry can fix them); an unreachable broker or topic costs an attempt,
 * and the last attempt dies as `attempts_exhausted`. A dead letter whose topic is unreachable
 * never dies of it: it waits, FAILED, for the dead-letter topic to come back, and its waits
 * cost no attempt (attempts never grow past MAX_ATTEMPTS).
 */
export const decide = (attempts: number, failure: PublishFailure, policy: Policy): Effect.Effect<RetryDecision> =>
  Effect.gen(function* () {
    switch (failure._tag) {
      case "KafkaRejected":
      case "InvalidEvent":
        return { _tag: "Dead", reason: failure.reason, error: failure.message }
      case "DeadLetterUnavailable":
        return { _tag: "RetryLater", delayMs: yield* retryDelayMs(policy, attempts + 1), error: failure.message }
      case "KafkaUnavailable":
      case "KafkaUnknownTopic":
        if (attempts + 1 >= policy.maxAttempts) {
          return { _tag: "Dead", reason: "attempts_exhausted", error: `gave up after ${attempts + 1} attempts: ${failure.message}` }
        }
        return { _tag: "RetryLater", delayMs: yield* retryDelayMs(policy, attempts + 1), error: failure.message }
    }
  })

/** An event claimed with its attempts already used up: its dead letter could not be sent earlier. */
export const exhaustedBefore = (attempts: number, policy: Policy): Extract<RetryDecision, { _tag: "Dead" }> | undefined =>
  attempts >= policy.maxAttempts ? { _tag: "Dead", reason: "attempts_exhausted", error: `gave up after ${attempts} attempts` } : undefined

/** The delay before retry number `retry` (1-based), read off the event backoff schedule. */
export const retryDelayMs = (policy: Policy, retry: number): Effect.Effect<number> =>
  Effect.gen(function* () {
    const step = yield* Schedule.toStep(backoffSchedule({ baseMs: policy.backoffBaseMs, maxMs: policy.backoffMaxMs }))
    const now = yield* Clock.currentTimeMillis
    let delay = Duration.zero
    for (let i = 0; i < Math.max(1, retry); i++) {
      // The schedule never ends, so a step always yields a delay.
      const [, d] = yield* Effect.orDie(step(now, undefined))
      delay = d
    }
    return Math.round(Duration.toMillis(delay))
  })

/** The bounds every delay of retry number `retry` stays within (the jitter is ×0.8–1.2, capped). */
export const retryDelayBounds = (policy: Policy, retry: number): { readonly min: number; readonly max: number } => {
  const nominal = Math.min(policy.backoffBaseMs * 2 ** (Math.max(1, retry) - 1), policy.backoffMaxMs)
  return { min: Math.floor(nominal * 0.8), max: Math.ceil(Math.min(nominal * 1.2, policy.backoffMaxMs)) }
}

/**
 * How long a mark that fails on the database is retried. A mark that never lands after Kafka
 * acknowledged leaves rows leased; they come back after the lease and go out again (a
 * duplicate). Retrying for most of the lease rides out a database restart without one; past
 * that, another instance may already have them. Only an outage or a lost race is worth
 * retrying: a data error fails the same way every time (its rows are isolated instead), and a
 * programming error needs an operator.
 */
export const markRetry = (leaseMs: number) => ({
  schedule: backoffSchedule({ baseMs: 100, maxMs: 2_000 }).pipe(Schedule.upTo({ duration: Duration.millis(leaseMs * 0.8) })),
  while: (e: DatabaseError) => e.fault === "outage" || e.fault === "conflict",
})
