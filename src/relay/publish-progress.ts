/**
 * A batch's outcome as it is built, step by step, by pure functions: each send's result is
 * folded into a new value, never into a shared mutable ledger.
 *
 * One hold-back rule, whatever the route: once an event of a key is left unsent (failed,
 * given back, its dead letter not published), the later events of that key in this batch are
 * given back untried, and the relay loop holds the key in the batches claimed behind this one.
 */
import type { Tracer } from "effect"
import type { ClaimedEvent, Delivery, WaitingDeadLetter } from "../domain/outbox-event.ts"
import type { DeadLetter } from "../kafka/dead-letter-record.ts"
import type { Publishable } from "./publish-plan.ts"
import type { RetryDecision } from "./retry-policy.ts"

export interface SentEvent {
  readonly event: ClaimedEvent
  readonly delivery: Delivery
  /** The event's publish span, when tracing is on (its SENT line belongs to that trace). */
  readonly span?: Tracer.Span | undefined
}
export interface FailedEvent {
  readonly event: ClaimedEvent
  readonly error: string
  readonly retryInMs: number
  /** This batch tried the event's own record (an attempt); waiting only for its dead letter is none. */
  readonly countsAttempt: boolean
  /** Set when the event is dead and only its letter could not be published: the row waits for the DLQ. */
  readonly waitingDeadLetter: WaitingDeadLetter | null
}
/** `trimmed`: the DLQ took the letter only without its value and the row's headers; `refused`: not even then. */
export interface DeadEvent extends DeadLetter {
  readonly letter: "full" | "trimmed" | "refused"
}

export interface BatchOutcome {
  readonly sent: ReadonlyArray<SentEvent>
  readonly failed: ReadonlyArray<FailedEvent>
  readonly dead: ReadonlyArray<DeadEvent>
  readonly givenBack: ReadonlyArray<ClaimedEvent>
  /** Kafka could not be reached for this batch: the loop should wait for it before claiming more. */
  readonly kafkaUnavailable: boolean
}

export interface Progress extends BatchOutcome {
  /** Keys with an event left unsent in this batch. */
  readonly unsentKeys: ReadonlySet<string>
}

export const EMPTY_PROGRESS: Progress = { sent: [], failed: [], dead: [], givenBack: [], unsentKeys: new Set(), kafkaUnavailable: false }

const withUnsent = (keys: ReadonlySet<string>, events: ReadonlyArray<ClaimedEvent>): ReadonlySet<string> => {
  const added = events.filter((e) => e.aggregateKey !== null && !keys.has(e.aggregateKey))
  return added.length === 0 ? keys : new Set([...keys, ...added.map((e) => e.aggregateKey!)])
}

export const isBlocked = (p: Progress, event: ClaimedEvent): boolean => event.aggregateKey !== null && p.unsentKeys.has(event.aggregateKey)

export const givenBack = (p: Progress, events: ReadonlyArray<ClaimedEvent>): Progress =>
  events.length === 0 ? p : { ...p, givenBack: [...p.givenBack, ...events], unsentKeys: withUnsent(p.unsentKeys, events) }

/** Splits items into those that may be sent now and those given back (their key is unsent, or Kafka is down). */
export const takeReady = <T extends { readonly event: ClaimedEvent }>(p: Progress, items: ReadonlyArray<T>) => {
  const ready: Array<T> = []
  const blocked: Array<ClaimedEvent> = []
  for (const item of items) {
    if (p.kafkaUnavailable || isBlocked(p, item.event)) blocked.push(item.event)
    else ready.push(item)
  }
  return { ready, progress: givenBack(p, blocked) }
}

export const sent = (p: Progress, items: ReadonlyArray<Publishable>, deliveries: ReadonlyArray<Delivery>): Progress => ({
  ...p,
  sent: [...p.sent, ...items.map((item, i) => ({ event: item.event, delivery: deliveries[i]! }))],
})

export const halted = (p: Progress): Progress => ({ ...p, kafkaUnavailable: true })

export const failed = (p: Progress, events: ReadonlyArray<FailedEvent>): Progress =>
  events.length === 0
    ? p
    : {
        ...p,
        failed: [...p.failed, ...events],
        unsentKeys: withUnsent(
          p.unsentKeys,
          events.map((f) => f.event),
        ),
      }

export const dead = (p: Progress, events: ReadonlyArray<DeadEvent>): Progress =>
  events.length === 0 ? p : { ...p, dead: [...p.dead, ...events] }

/**
 * Events Kafka did not take, with the retry policy's decision for each: a retry leaves the
 * event FAILED (an attempt spent), a death gives the dead letter to send next.
 */
export const decided = (
  p: Progress,
  decisions: ReadonlyArray<{ readonly item: Publishable; readonly decision: RetryDecision }>,
): { readonly progress: Progress; readonly letters: ReadonlyArray<DeadLetter> } => {
  const retries: Array<FailedEvent> = []
  const letters: Array<DeadLetter> = []
  for (const { item, decision } of decisions) {
    if (decision._tag === "RetryLater") {
      retries.push({ event: item.event, error: decision.error, retryInMs: decision.delayMs, countsAttempt: true, waitingDeadLetter: null })
    } else {
      letters.push({
        event: item.event,
        reason: decision.reason,
        error: decision.error,
        original: item.record,
        originalTopic: item.record.topic,
      })
    }
  }
  return { progress: failed(p, retries), letters }
}

/** Only the first unsent event of each key pays for a failure shared by many; the rest are given back. */
export const firstOfEachKey = (p: Progress, items: ReadonlyArray<Publishable>) => {
  const paying: Array<Publishable> = []
  const rest: Array<ClaimedEvent> = []
  const keys = new Set(p.unsentKeys)
  for (const item of items) {
    const key = item.event.aggregateKey
    if (key !== null && keys.has(key)) rest.push(item.event)
    else {
      paying.push(item)
      if (key !== null) keys.add(key)
    }
  }
  return { paying, progress: givenBack(p, rest) }
}
