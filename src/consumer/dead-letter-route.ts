/**
 * Where a dead letter ends: every route ends in a state, so no message blocks its partition
 * for good. In order:
 * 1. the dead-letter topic, whole;
 * 2. trimmed, when the topic refuses it for its size or as an invalid record (value omitted,
 *    then key and original headers omitted too);
 * 3. the `consumer_dead_letter` table (its position, bytes and why), with an ERROR log and
 *    a counter, when the topic refuses even the smallest form.
 * An unreachable topic or database is an outage, not the message's fault: it is waited out
 * in place (the offset is not committed meanwhile), never skipped.
 */
import { Clock, Effect } from "effect"
import { SqlClient, SqlError } from "effect/sql"
import { type BackoffPolicy, backoffSchedule } from "../domain/backoff.ts"
import { classifyKafkaError } from "../kafka/error-classification.ts"
import type { StatsRecorder } from "./consumer-stats.ts"
import { classifyDatabaseError } from "./database-errors.ts"
import { type ConsumerDeadLetter, DEAD_LETTER_TRIMS, type DeadLetterTrim, deadLetterMessage, publicErrorText } from "./dead-letter.ts"
import type { ConsumerKafkaError } from "./errors.ts"

export type DeadLetterRecord = ReturnType<typeof deadLetterMessage>

export type DeadLetterPlace = { readonly _tag: "Topic"; readonly trim: DeadLetterTrim } | { readonly _tag: "Table" }

export interface DeadLetterRoute {
  readonly send: (record: DeadLetterRecord) => Effect.Effect<void, ConsumerKafkaError>
  readonly outageBackoff: BackoffPolicy
  readonly stats: StatsRecorder
}

class DeadLetterTableOutage extends Error {}

/** The message's last resort: one row per position, so a redelivered dead letter is recorded once. */
const recordInDeadLetterTable = (letter: ConsumerDeadLetter, dedupKey: string | undefined, dlqError: string) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const m = letter.message
    yield* sql`
      INSERT INTO consumer_dead_letter
        (consumer_group, topic, kafka_partition, kafka_offset, dedup_key, reason, error, attempts, message_key, message_value, dlq_error)
      VALUES (${letter.consumerGroup}, ${m.topic}, ${m.partition}, ${m.offset}::bigint, ${dedupKey ?? null}, ${letter.reason},
              ${publicErrorText(letter.error)}, ${letter.attempts}, ${m.raw.key}, ${m.raw.value}, ${publicErrorText(dlqError)})
      ON CONFLICT (consumer_group, topic, kafka_partition, kafka_offset) DO NOTHING`
  })

export const routeToDeadLetter =
  (route: DeadLetterRoute) =>
  (letter: ConsumerDeadLetter, dedupKey: string | undefined): Effect.Effect<DeadLetterPlace, never, SqlClient.SqlClient> =>
    Effect.gen(function* () {
      let refusal = ""
      for (const trim of DEAD_LETTER_TRIMS) {
        const failedAt = new Date(yield* Clock.currentTimeMillis)
        const sent = yield* route.send(deadLetterMessage(letter, failedAt, trim)).pipe(
          Effect.mapError((e) => classifyKafkaError(e.cause)),
          Effect.tapError((e) =>
            e._tag !== "KafkaRejected"
              ? Effect.logWarning("dead-letter topic unreachable; retrying").pipe(
                  Effect.annotateLogs({ error: publicErrorText(e.message).slice(0, 300) }),
                )
              : Effect.void,
          ),
          // Unreachable is waited out in place; a refusal of this record is final for this form of it.
          // (A missing topic too: it may be created, and dead-lettering elsewhere is not undoable.)
          Effect.retry({ schedule: backoffSchedule(route.outageBackoff), while: (e) => e._tag !== "KafkaRejected" }),
          Effect.result,
        )
        if (sent._tag === "Success") return { _tag: "Topic", trim } satisfies DeadLetterPlace
        const refused = sent.failure
        refusal = refused._tag === "KafkaRejected" ? `${refused.reason}: ${refused.message}` : refused.message
        yield* Effect.logWarning("dead-letter topic refused the dead letter; trying a smaller form").pipe(
          Effect.annotateLogs({ trim, error: publicErrorText(refusal).slice(0, 300) }),
        )
      }
      const sql = yield* SqlClient.SqlClient
      yield* recordInDeadLetterTable(letter, dedupKey, refusal).pipe(
        Effect.provideService(SqlClient.SqlClient, sql),
        Effect.mapError((e) => (classifyDatabaseError(e).kind === "outage" ? new DeadLetterTableOutage(e.message) : e)),
        Effect.tapError((e) =>
          e instanceof DeadLetterTableOutage
            ? Effect.logWarning("database unavailable for the dead-letter table; waiting in place").pipe(
                Effect.annotateLogs({ error: e.message }),
              )
            : Effect.void,
        ),
        Effect.retry({ schedule: backoffSchedule(route.outageBackoff), while: (e) => e instanceof DeadLetterTableOutage }),
        // A row PostgreSQL refuses for its values: nowhere left to put it; said loudly, counted, passed.
        Effect.catch((e) =>
          Effect.logError("dead letter could not be recorded anywhere; the message stays only on its topic").pipe(
            Effect.annotateLogs({ error: SqlError.isSqlError(e) ? e.message : String(e) }),
          ),
        ),
      )
      yield* route.stats.record("deadLettersInTable")
      yield* Effect.logError("dead-letter topic refused even the trimmed dead letter; recorded in consumer_dead_letter").pipe(
        Effect.annotateLogs({ error: publicErrorText(refusal).slice(0, 300) }),
      )
      return { _tag: "Table" } satisfies DeadLetterPlace
    })
