/**
 * One span per event published, following the OpenTelemetry messaging conventions
 * (kind producer, messaging.system=kafka, destination, message id). Its parent is the
 * row's stored traceparent, so the request's trace continues into Kafka; the record's
 * traceparent header is rewritten to this span, so the consumer continues as its child.
 * When tracing is off no span is made: the row's traceparent goes out unchanged.
 */
import { Clock, Context, Effect, Exit, Tracer } from "effect"
import type { ClaimedEvent, Delivery } from "../domain/outbox-event.ts"
import { isValidTraceparent, type OutboundRecord } from "../kafka/records.ts"

/** True when spans are exported (TelemetryLive with an OTLP endpoint); per-event spans are made only then. */
export const TracingEnabled = Context.Reference<boolean>("outbox-relay/TracingEnabled", { defaultValue: () => false })

/** The row's traceparent as a parent span, or undefined when it has none or an invalid one. */
export const rowTraceContext = (event: ClaimedEvent): Tracer.ExternalSpan | undefined => {
  if (event.traceparent === null || !isValidTraceparent(event.traceparent)) return undefined
  const [, traceId, spanId, flags] = event.traceparent.split("-")
  return Tracer.externalSpan({ traceId: traceId!, spanId: spanId!, sampled: (Number.parseInt(flags!, 16) & 1) === 1 })
}

export const traceparentOf = (span: Tracer.Span): string => `00-${span.traceId}-${span.spanId}-${span.sampled ? "01" : "00"}`

/** Starts the span of one publish attempt; the caller ends it with `endPublishSpan` once the outcome is known. */
export const startPublishSpan = (event: ClaimedEvent, record: OutboundRecord): Effect.Effect<Tracer.Span> => {
  const parent = rowTraceContext(event)
  return Effect.makeSpan(`publish ${record.topic}`, {
    kind: "producer",
    // An event without a trace of its own starts one, rather than joining the batch's.
    ...(parent === undefined ? { root: true } : { parent }),
    attributes: {
      "messaging.system": "kafka",
      "messaging.operation.name": "publish",
      "messaging.operation.type": "send",
      "messaging.destination.name": record.topic,
      "messaging.message.id": event.eventId,
      "messaging.kafka.message.key": record.key,
      event_id: event.eventId,
      event_type: event.eventType,
      dedup_key: event.dedupKey,
      "outbox.attempt": event.attempts + 1,
      ...(event.requestId === null ? {} : { request_id: event.requestId }),
    },
  })
}

/** The record as sent under `span`: its traceparent header names the publish span. */
export const carryingSpan = (record: OutboundRecord, span: Tracer.Span): OutboundRecord => ({
  ...record,
  headers: { ...record.headers, traceparent: traceparentOf(span) },
})

export type PublishResult =
  | { readonly _tag: "sent"; readonly delivery: Delivery }
  | { readonly _tag: "failed" | "dead"; readonly error: string }
  | { readonly _tag: "held" }

export const endPublishSpan = (span: Tracer.Span, result: PublishResult): Effect.Effect<void> =>
  Effect.flatMap(Clock.currentTimeNanos, (now) =>
    Effect.sync(() => {
      span.attribute("outbox.outcome", result._tag)
      if (result._tag === "sent") {
        span.attribute("messaging.destination.partition.id", String(result.delivery.partition))
        span.attribute("messaging.kafka.offset", result.delivery.offset)
        span.end(now, Exit.void)
      } else if (result._tag === "held") {
        // Given back untried (Kafka went away mid-batch): not an error of this event.
        span.end(now, Exit.void)
      } else {
        span.end(now, Exit.fail(new Error(result.error)))
      }
    }),
  )

/** With tracing on, each event gets its publish span, and its record the span's traceparent. */
export const startEventSpans = Effect.fnUntraced(function* <T extends { readonly event: ClaimedEvent; readonly record: OutboundRecord }>(
  items: ReadonlyArray<T>,
) {
  const spans = new Map<string, Tracer.Span>()
  if (!(yield* TracingEnabled)) return { items, spans }
  const traced = yield* Effect.forEach(items, (item) =>
    Effect.map(startPublishSpan(item.event, item.record), (span) => {
      spans.set(item.event.id, span)
      return { ...item, record: carryingSpan(item.record, span) }
    }),
  )
  return { items: traced, spans }
})

/** Ends each event's publish span with the route its event took. */
export const endEventSpans = (
  spans: ReadonlyMap<string, Tracer.Span>,
  results: ReadonlyArray<readonly [event: ClaimedEvent, result: PublishResult]>,
): Effect.Effect<void> =>
  spans.size === 0
    ? Effect.void
    : Effect.forEach(
        results,
        ([event, result]) => {
          const span = spans.get(event.id)
          return span === undefined ? Effect.void : endPublishSpan(span, result)
        },
        { discard: true },
      )
