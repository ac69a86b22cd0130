/**
 * What an operator gets for each dead letter: an ERROR log line with `ops_ticket: true`,
 * the dead-letter counter, and, when OPS_WEBHOOK_URL is set, a JSON POST a ticketing
 * system can take (retried with backoff in the background, so a slow webhook never
 * holds up the relay).
 */
import { Clock, Context, Data, Effect, Layer, Metric, Redacted, Schedule } from "effect"
import { RelayConfig } from "../config/config.ts"
import { backoffSchedule } from "../domain/backoff.ts"
import type { DeadLetter } from "../kafka/dead-letter-record.ts"
import { InstanceId } from "../outbox/instance-id.ts"
import { inEventTrace } from "../telemetry/event-spans.ts"
import { deadLetters } from "../telemetry/metrics.ts"

export class WebhookFailed extends Data.TaggedError("WebhookFailed")<{ readonly message: string }> {}

export interface DeadLetterTicket {
  readonly type: "outbox.dead_letter"
  readonly event_id: string
  readonly event_type: string
  readonly dedup_key: string
  readonly aggregate_key: string | null
  readonly reason: string
  readonly error: string
  readonly attempts: number
  readonly dlq_topic: string
  readonly original_topic: string | null
  readonly request_id: string | null
  readonly failed_at: string
  readonly relay_instance: string
}

export class DeadLetterSignal extends Context.Service<
  DeadLetterSignal,
  { readonly raise: (letters: ReadonlyArray<DeadLetter>) => Effect.Effect<void> }
>()("outbox-relay/DeadLetterSignal") {
  static readonly layer = Layer.effect(
    DeadLetterSignal,
    Effect.gen(function* () {
      const config = yield* RelayConfig
      const instance = yield* InstanceId
      const scope = yield* Effect.scope
      const webhook = config.opsWebhookUrl === undefined ? undefined : Redacted.value(config.opsWebhookUrl)

      const post = (ticket: DeadLetterTicket) =>
        Effect.tryPromise({
          try: async (signal) => {
            const response = await fetch(webhook!, {
              method: "POST",
              headers: { "content-type": "application/json" },
              body: JSON.stringify(ticket),
              signal: AbortSignal.any([signal, AbortSignal.timeout(10_000)]),
            })
            if (!response.ok) throw new WebhookFailed({ message: `webhook answered ${response.status}` })
          },
          catch: (e) => (e instanceof WebhookFailed ? e : new WebhookFailed({ message: e instanceof Error ? e.message : String(e) })),
        }).pipe(
          Effect.retry(backoffSchedule({ baseMs: 500, maxMs: 30_000 }).pipe(Schedule.upTo({ times: 6 }))),
          Effect.catch((e) =>
            Effect.logError("ops webhook gave up; the dead letter is still logged and counted").pipe(
              Effect.annotateLogs({ event_id: ticket.event_id, error: e.message }),
            ),
          ),
        )

      const raise = (letters: ReadonlyArray<DeadLetter>) =>
        Effect.forEach(
          letters,
          (letter) =>
            Effect.gen(function* () {
              const ticket: DeadLetterTicket = {
                type: "outbox.dead_letter",
                event_id: letter.event.eventId,
                event_type: letter.event.eventType,
                dedup_key: letter.event.dedupKey,
                aggregate_key: letter.event.aggregateKey,
                reason: letter.reason,
                error: letter.error,
                attempts: letter.event.attempts + 1,
                dlq_topic: config.dlqTopic,
                original_topic: letter.originalTopic ?? null,
                request_id: letter.event.requestId,
                failed_at: new Date(yield* Clock.currentTimeMillis).toISOString(),
                relay_instance: instance,
              }
              yield* Metric.update(deadLetters, 1)
              const { type: _type, ...fields } = ticket
              // The line leads to the event's own trace (its dead-letter span), not the batch's.
              yield* Effect.logError("event dead-lettered").pipe(
                Effect.annotateLogs({ ops_ticket: true, ...fields }),
                inEventTrace(letter.event, letter.span),
              )
              if (webhook !== undefined) yield* Effect.forkIn(post(ticket), scope)
            }),
          { discard: true },
        )

      return DeadLetterSignal.of({ raise })
    }),
  )
}
