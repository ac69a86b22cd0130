/**
 * One message, effectively once: the inbox row and the handler's writes commit in one
 * transaction. A key already in the inbox means an earlier delivery committed, so the
 * handler is skipped. A failing handler is retried with backoff, then the message goes to
 * the dead-letter topic. Database and Kafka outages are waited out, never dead-lettered:
 * they are not the message's fault. Which database errors are outages is read from their
 * SQLSTATE (database-errors.ts); a data error in the inbox row is the message's, and gets
 * the handler's retry budget, then the dead-letter topic.
 */
import { Cause, Duration, Effect, Option, Ref, Result, type Schema } from "effect"
import { SqlClient, SqlError } from "effect/sql"
import { type BackoffPolicy, backoffSchedule } from "../domain/backoff.ts"
import { annotateConsumerOutcome, consumedEventAttributes } from "../telemetry/consumer-span.ts"
import {
  type ConsumedEvent,
  type ConsumedMessage,
  decodePayload,
  dedupKeyProblem,
  externalParent,
  type HeaderBounds,
  headerBoundsProblem,
  headerProblem,
  loggedKey,
  toConsumedEvent,
} from "./consumed-message.ts"
import type { StatsRecorder } from "./consumer-stats.ts"
import { classifyDatabaseError, findSqlError } from "./database-errors.ts"
import { type ConsumerDeadLetter, type ConsumerDeadReason, publicErrorText } from "./dead-letter.ts"
import type { DeadLetterPlace } from "./dead-letter-route.ts"
import { DatabaseUnavailable, HandlerEndedTransaction, HandlerFailed, InboxRejected } from "./errors.ts"
import { recordInInbox } from "./inbox-table.ts"

export type MessageOutcome =
  | { readonly _tag: "Processed"; readonly message: ConsumedMessage; readonly dedupKey: string; readonly attempts: number }
  | { readonly _tag: "Duplicate"; readonly message: ConsumedMessage; readonly dedupKey: string }
  | {
      readonly _tag: "DeadLettered"
      readonly message: ConsumedMessage
      readonly dedupKey: string | undefined
      readonly reason: ConsumerDeadReason
      readonly error: string
      readonly attempts: number
    }

export interface MessageProcessor<A, E, R> {
  readonly consumerGroup: string
  readonly handler: (event: ConsumedEvent<A>) => Effect.Effect<void, E, R>
  readonly payloadSchema: Schema.Decoder<A>
  readonly dedupKeyOf: (message: ConsumedMessage) => string | undefined
  readonly maxRetries: number
  readonly retryBackoff: BackoffPolicy
  readonly outageBackoff: BackoffPolicy
  readonly stats: StatsRecorder
  /** Sends the dead letter where it fits (topic, trimmed, or the dead-letter table); never fails. */
  readonly deadLetter: (
    letter: ConsumerDeadLetter,
    dedupKey: string | undefined,
  ) => Effect.Effect<DeadLetterPlace, never, SqlClient.SqlClient>
  /** An attempt of the handler running longer is cut off and counts as a failure (none: no limit). */
  readonly handlerTimeout: Duration.Duration | undefined
  readonly headerBounds: HeaderBounds
}

/**
 * What a failure says, for logs and `dlq.error`. Never throws: whatever a handler threw (a
 * Proxy whose traps throw, an object whose toString throws) is still the handler's failure.
 */
const describe = (cause: Cause.Cause<unknown>): string => {
  try {
    const error = Cause.squash(cause)
    const text =
      error instanceof Error
        ? error.message
        : typeof error === "string"
          ? error
          : typeof error === "object" && error !== null
            ? (JSON.stringify(error) ?? String(error))
            : String(error)
    return publicErrorText(text)
  } catch {
    return "the handler failed with a value that cannot be described"
  }
}

/** The failure, keeping what was thrown when it is an Error. */
const handlerFailed = (message: string, thrown: unknown): HandlerFailed => {
  try {
    // Only an Error is kept: anything else (a Proxy whose traps throw) would throw wherever it is read later, outside the handler.
    return new HandlerFailed({ message, cause: thrown instanceof Error ? thrown : undefined })
  } catch {
    return new HandlerFailed({ message, cause: undefined })
  }
}

const squashed = (cause: Cause.Cause<unknown>): unknown => {
  try {
    return Cause.squash(cause)
  } catch {
    return undefined
  }
}

/** What a handler returned instead of an Effect, for the error. */
const kindOf = (value: unknown): string => {
  if (value === null) return "null"
  if (typeof value !== "object") return typeof value
  try {
    return typeof (value as { then?: unknown }).then === "function" ? "a Promise" : "an object"
  } catch {
    return "an object"
  }
}

/**
 * Runs the handler; any failure or defect becomes HandlerFailed, interruption stays
 * interruption. A handler that returns something other than an Effect (a Promise, from an
 * `async` handler) fails here: run as an Effect it would crash the fiber outside its
 * finalizers and leave the inbox transaction open on its connection.
 */
const runHandler = <A, E, R>(
  handler: MessageProcessor<A, E, R>["handler"],
  event: ConsumedEvent<A>,
  timeout: Duration.Duration | undefined,
  onTimeout: Effect.Effect<void>,
): Effect.Effect<void, HandlerFailed, R> => {
  const attempt = Effect.suspend((): Effect.Effect<void, E | HandlerFailed, R> => {
    let returned: unknown
    try {
      returned = handler(event)
    } catch (thrown) {
      // Caught here, not left to the runtime: a thrown value whose traps throw (a Proxy) must still be the handler's failure.
      return Effect.fail(handlerFailed(describe(Cause.die(thrown)), thrown))
    }
    return Effect.isEffect(returned)
      ? (returned as Effect.Effect<void, E, R>)
      : Effect.fail(new HandlerFailed({ message: `the handler returned ${kindOf(returned)}, not an Effect`, cause: undefined }))
  })
  const bounded =
    timeout === undefined
      ? attempt
      : attempt.pipe(
          Effect.timeoutOrElse({
            duration: timeout,
            orElse: () =>
              onTimeout.pipe(
                Effect.andThen(
                  Effect.fail(
                    new HandlerFailed({ message: `the handler ran past handlerTimeout (${Duration.format(timeout)})`, cause: undefined }),
                  ),
                ),
              ),
          }),
        )
  return bounded.pipe(
    Effect.catchCause((cause) => {
      if (Cause.hasInterruptsOnly(cause)) return Effect.interrupt
      const failure = cause.reasons.find(Cause.isFailReason)?.error
      return failure instanceof HandlerFailed ? Effect.fail(failure) : Effect.fail(handlerFailed(describe(cause), squashed(cause)))
    }),
  )
}

/**
 * Whose fault a failed attempt is: an outage of the database (wherever its SqlError came
 * from, the handler's own queries included), the inbox row's values, or the handler.
 */
const blame = (
  cause: Cause.Cause<HandlerFailed | HandlerEndedTransaction | SqlError.SqlError>,
): DatabaseUnavailable | InboxRejected | HandlerFailed | HandlerEndedTransaction => {
  const ended = cause.reasons.find(
    (r): r is Cause.Fail<HandlerEndedTransaction> => Cause.isFailReason(r) && r.error instanceof HandlerEndedTransaction,
  )?.error
  if (ended !== undefined) return ended
  const handlerFailure = cause.reasons.find(
    (r): r is Cause.Fail<HandlerFailed> => Cause.isFailReason(r) && r.error instanceof HandlerFailed,
  )?.error
  const sqlError = findSqlError(cause) ?? (SqlError.isSqlError(handlerFailure?.cause) ? handlerFailure.cause : undefined)
  const db = sqlError === undefined ? undefined : classifyDatabaseError(sqlError)
  if (db?.kind === "outage") return new DatabaseUnavailable({ code: db.code, message: db.message })
  if (handlerFailure !== undefined) return handlerFailure
  if (db !== undefined) return new InboxRejected({ code: db.code, message: `PostgreSQL ${db.code ?? "error"}: ${db.message}` })
  // A defect outside the handler that is not the database's: bounded, so it cannot block the partition.
  return new InboxRejected({ code: undefined, message: describe(cause) })
}

export const processMessage =
  <A, E, R>(p: MessageProcessor<A, E, R>) =>
  (message: ConsumedMessage): Effect.Effect<MessageOutcome, never, R | SqlClient.SqlClient> =>
    Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      const attempts = yield* Ref.make(0)

      const deadLetter = (dedupKey: string | undefined, reason: ConsumerDeadReason, error: string) =>
        Effect.gen(function* () {
          const tries = yield* Ref.get(attempts)
          // A dead letter is never dropped: until it is somewhere, the offset is not committed.
          const place = yield* p.deadLetter({ message, consumerGroup: p.consumerGroup, reason, error, attempts: tries }, dedupKey)
          if (place._tag === "Topic") {
            yield* p.stats.record("deadLettered")
            if (place.trim !== "none") yield* p.stats.record("deadLettersTrimmed")
          }
          yield* Effect.logError("message dead-lettered").pipe(
            Effect.annotateLogs({
              reason,
              error: publicErrorText(error),
              attempts: tries,
              place: place._tag === "Topic" ? `topic (trimmed: ${place.trim})` : "consumer_dead_letter",
            }),
          )
          return { _tag: "DeadLettered", message, dedupKey, reason, error, attempts: tries } satisfies MessageOutcome
        })

      const oversized = headerBoundsProblem(message, p.headerBounds)
      if (oversized !== undefined) return yield* deadLetter(undefined, oversized.reason, oversized.message)
      const dedupKey = p.dedupKeyOf(message)
      const keyProblem = dedupKeyProblem(dedupKey, message.malformedHeaders.includes("dedup_key"))
      if (keyProblem !== undefined || dedupKey === undefined) {
        return yield* deadLetter(undefined, keyProblem?.reason ?? "missing_dedup_key", keyProblem?.message ?? "no dedup key")
      }
      const badHeader = headerProblem(message)
      if (badHeader !== undefined) return yield* deadLetter(dedupKey, badHeader.reason, badHeader.message)
      const payload = decodePayload(p.payloadSchema)(message)
      if (Result.isFailure(payload)) return yield* deadLetter(dedupKey, payload.failure.reason, payload.failure.message)

      const inboxEntry = {
        consumerGroup: p.consumerGroup,
        dedupKey,
        eventId: message.headers.event_id ?? null,
        topic: message.topic,
        partition: message.partition,
        offset: message.offset,
      }
      // Counted by the COMMIT itself (afterCommit runs uninterruptibly once it succeeded). A revoke
      // that lands while COMMIT is on the wire is delivered when the transaction returns and turns
      // its success into an interruption, so counting on the transaction's exit would leave the
      // applied event uncounted, and its redelivery is then counted as a duplicate only.
      const attemptOnce = sql
        .withTransaction(
          Effect.gen(function* () {
            const recorded = yield* recordInInbox(inboxEntry)
            if (!recorded.inserted) {
              yield* sql.afterCommit(p.stats.record("duplicates"))
              return "Duplicate" as const
            }
            const attempt = yield* Ref.updateAndGet(attempts, (n) => n + 1)
            yield* runHandler(
              p.handler,
              toConsumedEvent(message, dedupKey, payload.success, attempt),
              p.handlerTimeout,
              p.stats.record("handlerTimeouts"),
            )
            // Still the transaction the inbox row was written in? A handler that ran COMMIT or
            // ROLLBACK itself left it: the row and the effects are no longer one unit.
            const [now] = yield* sql<{ txid: string | null }>`SELECT txid_current_if_assigned()::text AS txid`
            if (now?.txid !== recorded.txid) {
              return yield* new HandlerEndedTransaction({
                message:
                  "the handler ended the inbox transaction itself (it ran COMMIT or ROLLBACK): what it wrote is no longer protected by the inbox; not retried",
              })
            }
            yield* sql.afterCommit(p.stats.record("processed"))
            return "Processed" as const
          }),
        )
        // One place decides whose fault a failure is. A failed ROLLBACK on a dead connection
        // is a defect combined with the handler's failure, so the whole cause is read.
        .pipe(Effect.catchCause((cause) => (Cause.hasInterruptsOnly(cause) ? Effect.interrupt : Effect.fail(blame(cause)))))

      const settled = yield* attemptOnce.pipe(
        // The message's own failures have a bounded budget. A rejected inbox row counts an attempt
        // too (the handler never ran, so `attempts` did not move).
        Effect.tapError((e) => (e._tag === "InboxRejected" ? Ref.update(attempts, (n) => n + 1) : Effect.void)),
        Effect.tapError((e) =>
          e._tag === "HandlerEndedTransaction"
            ? p.stats.record("handlerFailures")
            : e._tag === "DatabaseUnavailable"
              ? Effect.gen(function* () {
                  yield* p.stats.record("databaseOutages")
                  yield* Effect.logWarning("inbox database unavailable; waiting in place").pipe(
                    Effect.annotateLogs({ pg_code: e.code ?? "none", error: e.message }),
                  )
                })
              : Effect.gen(function* () {
                  yield* p.stats.record("handlerFailures")
                  const attempt = yield* Ref.get(attempts)
                  const what = e._tag === "InboxRejected" ? "inbox row rejected" : "handler failed"
                  yield* Effect.logWarning(attempt > p.maxRetries ? `${what}; no retries left` : `${what}; retrying with backoff`).pipe(
                    Effect.annotateLogs({
                      error: e.message,
                      attempt,
                      ...(e._tag === "InboxRejected" ? { pg_code: e.code ?? "none" } : {}),
                    }),
                  )
                }),
        ),
        // The budget is read from `attempts`, not from the schedule, so it holds across outage waits.
        Effect.retry({
          schedule: backoffSchedule(p.retryBackoff),
          while: (e) => e._tag !== "DatabaseUnavailable" && e._tag !== "HandlerEndedTransaction" && Ref.getUnsafe(attempts) <= p.maxRetries,
        }),
        // Outages outlast any retry budget: the message waits in place (interruptibly: a stop or
        // revoke abandons it uncommitted).
        Effect.retry({ schedule: backoffSchedule(p.outageBackoff), while: (e) => e._tag === "DatabaseUnavailable" }),
        Effect.result,
      )
      if (Result.isFailure(settled)) {
        const error = settled.failure
        // The outage retry above never gives up, so only the message's own failures arrive here.
        if (error._tag === "DatabaseUnavailable") return yield* Effect.die(error)
        return yield* deadLetter(dedupKey, error._tag === "InboxRejected" ? "inbox_rejected" : "handler_failed", error.message)
      }
      if (settled.success === "Duplicate") {
        yield* Effect.logDebug("duplicate skipped: its dedup key is already in the inbox")
        return { _tag: "Duplicate", message, dedupKey } satisfies MessageOutcome
      }
      return { _tag: "Processed", message, dedupKey, attempts: yield* Ref.get(attempts) } satisfies MessageOutcome
    }).pipe(
      Effect.tap(annotateConsumerOutcome),
      Effect.annotateLogs({
        topic: message.topic,
        partition: message.partition,
        offset: message.offset,
        event_id: loggedKey(message.headers.event_id),
        dedup_key: loggedKey(message.headers.dedup_key),
        request_id: loggedKey(message.headers.request_id),
      }),
      Effect.withSpan(`${message.topic} process`, {
        kind: "consumer",
        ...Option.match(externalParent(message), { onNone: () => ({ root: true }), onSome: (parent) => ({ parent }) }),
        attributes: {
          "messaging.system": "kafka",
          "messaging.operation.type": "process",
          "messaging.destination.name": message.topic,
          "messaging.consumer.group.name": p.consumerGroup,
          "messaging.destination.partition.id": String(message.partition),
          "messaging.kafka.offset": message.offset,
          "messaging.message.id": loggedKey(message.headers.event_id),
          ...consumedEventAttributes(message),
        },
      }),
    ) as Effect.Effect<MessageOutcome, never, R | SqlClient.SqlClient>
