/**
 * The spans of every route an event takes besides a publish attempt (publish-spans.ts):
 * dead-lettered (before any send, or after its attempts ran out; the DLQ took the letter
 * whole, trimmed, or refused it), given back or held back untried, and replayed by an
 * operator. Each is a span in the event's own trace (the row's traceparent), tagged like
 * the publish span, so a search by request id or an error search lands on the event. With
 * tracing off none is made: the callers get `undefined` and carry the row's traceparent.
 *
 * Also here: what makes a log line about an event lead to its trace, and what a batch span
 * says about the events it covers.
 */
import { Clock, Effect, Exit, type Tracer } from "effect"
import type { ClaimedEvent } from "../domain/outbox-event.ts"
import type { OutboundRecord } from "../kafka/records.ts"
import { carryingSpan, type EventIdentity, eventAttributes, rowTraceContext, TracingEnabled } from "./publish-spans.ts"

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

export interface DeadLetterRoute {
  readonly reason: string
  readonly error: string
  /** True when the event was never offered to Kafka (unknown type, too large, bad headers, attempts ran out earlier). */
  readonly beforeSend: boolean
  readonly originalTopic: string | undefined
}

/**
 * Starts the span of an event's way to the dead-letter topic. Its context is the dead-letter
 * record's traceparent (`deadLetterCarrying`), so whoever reads the DLQ continues this trace.
 */
export const startDeadLetterSpan = (event: ClaimedEvent, dlqTopic: string, route: DeadLetterRoute) =>
  startEventSpan(event, `dead-letter ${dlqTopic}`, "producer", {
    "messaging.system": "kafka",
    "messaging.operation.type": "send",
    "messaging.destination.name": dlqTopic,
    "outbox.outcome": "dead",
    "outbox.dead_reason": route.reason,
    "outbox.before_send": route.beforeSend,
    "outbox.original_topic": route.originalTopic ?? "",
    "error.type": route.reason,
  })

/**
 * The dead-letter record as sent: its traceparent names the dead-letter span, or, with
 * tracing off, the row's own traceparent when it has a valid one.
 */
export const deadLetterCarrying = (record: OutboundRecord, event: ClaimedEvent, span: Tracer.Span | undefined): OutboundRecord => {
  if (span !== undefined) return carryingSpan(record, span)
  const row = rowTraceContext(event)
  return row === undefined ? record : { ...record, headers: { ...record.headers, traceparent: event.traceparent! } }
}

/**
 * Ends it once the DLQ answered: `full` or `trimmed` (it took the letter without value and
 * row headers), `refused` (the row is DEAD as dlq_rejected and keeps everything), or
 * `unreachable` (the event stays FAILED and will try again). A dead event is an error span.
 */
export const endDeadLetterSpan = (
  span: Tracer.Span | undefined,
  letter: "full" | "trimmed" | "refused" | "unreachable",
  error: string,
  reason?: string,
) =>
  span === undefined
    ? Effect.void
    : Effect.suspend(() => {
        span.attribute("outbox.dead_letter", letter)
        if (reason !== undefined) span.attribute("outbox.dead_reason", reason)
        if (letter === "unreachable") span.attribute("outbox.outcome", "failed")
        return endSpan(span, Exit.fail(new Error(error)))
      })

/**
 * An event given back untried (its key is held behind an unsent event, or Kafka went away
 * mid-batch): a short span, not an error, so its trace shows why it waited.
 */
export const heldBackSpan = (event: ClaimedEvent, why: "key_held" | "kafka_unavailable" | "batch_stopped") =>
  Effect.flatMap(startEventSpan(event, "hold back", "internal", { "outbox.outcome": "held", "outbox.held_because": why }), (span) =>
    endSpan(span, Exit.void),
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
export const annotateBatch = (events: ReadonlyArray<ClaimedEvent>) => Effect.annotateCurrentSpan(batchAttributes(events))
