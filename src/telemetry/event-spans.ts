/**
 * The spans of every route an event takes besides a publish attempt (publish-spans.ts):
 * dead-lettered (before any send, or after its attempts ran out; the DLQ took the letter
 * whole, trimmed, or refused it), given back or held back untried, and replayed by an
 * operator. Each is a span in the event's own trace (the row's traceparent), tagged like
 * the publish span, so a search by request id or an error search lands on the event. With
 * tracing off none is made.
 *
 * Also here: what makes a log line about an event lead to its trace, and what a batch span
 * says about the events it covers.
 */
import { Clock, Effect, Exit, type Tracer } from "effect"
import type { ClaimedEvent } from "../domain/outbox-event.ts"
import type { DeadLetter } from "../kafka/dead-letter-record.ts"
import { type EventIdentity, endEventSpans, eventAttributes, type PublishResult, rowTraceContext, TracingEnabled } from "./publish-spans.ts"

/** A span in the event's own trace: child of the row's traceparent, or the root of a new trace. */
const startEventSpan = (event: EventIdentity, name: string, kind: Tracer.SpanKind, attributes: Record<string, unknown>) =>
  Effect.gen(function* () {
    if (!(yield* TracingEnabled)) return undefined
    const parent = rowTraceContext(event)
    return yield* Effect.makeSpan(name, {
      kind,
      ...(parent === undefined ? { root: true } : { parent }),
      attributes: { ...eventAttributes(event), ...attributes },
    })
  })

const endSpan = (span: Tracer.Span | undefined, exit: Exit.Exit<unknown, unknown>) =>
  span === undefined ? Effect.void : Effect.flatMap(Clock.currentTimeNanos, (now) => Effect.sync(() => span.end(now, exit)))

/**
 * Each letter with the span of its way to the dead-letter topic (none with tracing off). The
 * span's context becomes the dead-letter record's traceparent (dead-letter-record.ts), so
 * whoever reads the DLQ continues the event's trace. `beforeSend`: the event was never
 * offered to Kafka (unknown type, too large, bad headers, attempts ran out earlier).
 */
export const startDeadLetterSpans = <L extends DeadLetter>(letters: ReadonlyArray<L>, dlqTopic: string, beforeSend: boolean) =>
  Effect.forEach(letters, (letter) =>
    Effect.map(
      startEventSpan(letter.event, `dead-letter ${dlqTopic}`, "producer", {
        "messaging.system": "kafka",
        "messaging.operation.type": "send",
        "messaging.destination.name": dlqTopic,
        "outbox.outcome": "dead",
        "outbox.dead_reason": letter.reason,
        "outbox.before_send": beforeSend,
        "outbox.original_topic": letter.originalTopic ?? "",
        "error.type": letter.reason,
      }),
      (span): L => (span === undefined ? letter : { ...letter, span }),
    ),
  )

/** What the DLQ did with each letter, as dead-letter-delivery.ts reports it. */
export type DeliveredLetter =
  | { readonly _tag: "Delivered"; readonly letter: DeadLetter; readonly shape: "full" | "trimmed" }
  | { readonly _tag: "Refused"; readonly letter: DeadLetter; readonly error: string }
  | { readonly _tag: "Undelivered"; readonly letter: DeadLetter; readonly error: { readonly message: string } }
  | { readonly _tag: "Untried"; readonly letter: DeadLetter }

const endDeadLetterSpan = (
  span: Tracer.Span | undefined,
  letter: "full" | "trimmed" | "refused" | "unreachable" | "untried",
  error: string,
) =>
  span === undefined
    ? Effect.void
    : Effect.suspend(() => {
        span.attribute("outbox.dead_letter", letter)
        if (letter === "refused") span.attribute("outbox.dead_reason", "dlq_rejected")
        // Its letter waits for the DLQ: the event is FAILED until it is sent again.
        if (letter === "unreachable" || letter === "untried") span.attribute("outbox.outcome", "failed")
        return endSpan(span, Exit.fail(new Error(error)))
      })

/**
 * Ends each letter's span with what became of it: on the DLQ `full` or `trimmed` (without
 * value and row headers), `refused` (the row is DEAD as dlq_rejected and keeps everything),
 * or still waiting for the DLQ. Every one is an error span: the event did not get through.
 */
export const endDeadLetterSpans = (results: ReadonlyArray<DeliveredLetter>) =>
  Effect.forEach(
    results,
    (r) => {
      const why = `${r.letter.reason}: ${r.letter.error}`
      switch (r._tag) {
        case "Delivered":
          return endDeadLetterSpan(r.letter.span, r.shape, why)
        case "Refused":
          return endDeadLetterSpan(r.letter.span, "refused", `${why}; the dead-letter topic refused it too: ${r.error}`)
        case "Undelivered":
          return endDeadLetterSpan(r.letter.span, "unreachable", `${why}; not published: ${r.error.message}`)
        case "Untried":
          return endDeadLetterSpan(r.letter.span, "untried", `${why}; not tried: the batch ran out of time`)
      }
    },
    { discard: true },
  )

/**
 * An event given back untried (its key is held behind an unsent event, or Kafka went away
 * mid-batch): a short span, not an error, so its trace shows why it waited.
 */
const heldBackSpan = (event: ClaimedEvent, why: "key_held" | "kafka_unavailable") =>
  Effect.flatMap(startEventSpan(event, "hold back", "internal", { "outbox.outcome": "held", "outbox.held_because": why }), (span) =>
    endSpan(span, Exit.void),
  )

/**
 * Ends each event's publish span with its route (publish-spans.ts), and gives an event held
 * back without one (never offered in this batch) a span of its own.
 */
export const endRouteSpans = (
  spans: ReadonlyMap<string, Tracer.Span>,
  results: ReadonlyArray<readonly [event: ClaimedEvent, result: PublishResult]>,
  kafkaUnavailable: boolean,
) =>
  Effect.andThen(
    endEventSpans(spans, results),
    Effect.forEach(
      results.filter(([event, result]) => result._tag === "held" && !spans.has(event.id)),
      ([event]) => heldBackSpan(event, kafkaUnavailable ? "kafka_unavailable" : "key_held"),
      { discard: true },
    ),
  )

/** A replayed event, as seen by the replay: the row's id, traceparent and request id. */
export interface ReplayedRow {
  readonly id: string
  readonly event_id: string
  readonly event_type: string
  readonly dedup_key: string
  readonly request_id: string | null
  readonly traceparent: string | null
  readonly dead_reason: string | null
  readonly attempts: number
}

/**
 * One span per replayed event, in the event's original trace, tagged with the replay's own
 * request id and audit id: the event's story shows who sent it round again, and when.
 */
export const replaySpans = (rows: ReadonlyArray<ReplayedRow>, replay: { requestId: string; auditId: string | null; actor: string }) =>
  Effect.forEach(
    rows,
    (row) =>
      Effect.flatMap(
        startEventSpan(
          {
            eventId: row.event_id,
            eventType: row.event_type,
            dedupKey: row.dedup_key,
            requestId: row.request_id,
            traceparent: row.traceparent,
            attempts: row.attempts,
          },
          "replay",
          "server",
          {
            "outbox.outcome": "replayed",
            "outbox.replay.request_id": replay.requestId,
            "outbox.replay.audit_id": replay.auditId ?? "",
            "outbox.replay.actor": replay.actor,
            "outbox.replay.previous_reason": row.dead_reason ?? "",
          },
        ),
        (span) => endSpan(span, Exit.void),
      ),
    { discard: true },
  )

/**
 * Runs a log effect about one event inside that event's trace: its line carries the event's
 * trace_id and span_id (the span given, else the row's traceparent), not the batch's, and
 * its request id.
 */
export const inEventTrace =
  (event: ClaimedEvent, span?: Tracer.Span | undefined) =>
  <A, E, R>(log: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> => {
    const trace: Tracer.AnySpan | undefined = span ?? rowTraceContext(event)
    const annotated = Effect.annotateLogs(log, {
      event_id: event.eventId,
      dedup_key: event.dedupKey,
      ...(event.requestId === null ? {} : { request_id: event.requestId }),
    })
    return trace === undefined ? annotated : Effect.withParentSpan(annotated, trace)
  }

/** How many ids a batch span lists: enough to land on the events, bounded for the backend. */
const LISTED = 50

/**
 * What a batch span (claim, send, mark) says about the events it covers: their count, and
 * the first event ids and request ids, so that an error search lands on the events.
 */
export const batchAttributes = (events: ReadonlyArray<ClaimedEvent>): Record<string, unknown> => {
  const requestIds = [...new Set(events.flatMap((e) => (e.requestId === null ? [] : [e.requestId])))]
  return {
    "outbox.batch.count": events.length,
    "outbox.event_ids": events
      .slice(0, LISTED)
      .map((e) => e.eventId)
      .join(","),
    ...(requestIds.length === 0 ? {} : { "outbox.request_ids": requestIds.slice(0, LISTED).join(",") }),
  }
}

/** Tags the current span (a batch's) with the events it covers. */
export const annotateBatch = (events: ReadonlyArray<ClaimedEvent>) =>
  Effect.flatMap(TracingEnabled, (enabled) => (enabled ? Effect.annotateCurrentSpan(batchAttributes(events)) : Effect.void))
