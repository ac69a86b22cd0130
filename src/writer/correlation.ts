/**
 * Where the writer finds request_id and traceparent when the caller does not pass them.
 *
 * - request_id: the `RequestId` reference (set it once per request, e.g. in HTTP
 *   middleware: `Effect.provideService(RequestId, id)`), else a `request_id` log
 *   annotation (`Effect.annotateLogs({ request_id })`), else none.
 * - traceparent: the writer's own span (`OutboxWriter.write`, kind producer), so the
 *   trace reads request → outbox write → relay publish → consumer. Only when the caller
 *   is inside a span (an `Effect.fn`, a `withSpan`, or `sql.withTransaction`, which opens
 *   one): a bare write records none rather than a fresh trace nobody asked for.
 *   `Tracer.DisablePropagation` turns it off.
 */
import { Context, Effect, Option, References, Tracer } from "effect"

export const RequestId = Context.Reference<string | undefined>("outbox-relay/writer/RequestId", {
  defaultValue: () => undefined,
})

export const currentRequestId: Effect.Effect<string | null> = Effect.gen(function* () {
  const explicit = yield* RequestId
  if (explicit !== undefined && explicit.trim() !== "") return explicit
  const annotations = yield* References.CurrentLogAnnotations
  const annotated = annotations.request_id
  return typeof annotated === "string" && annotated.trim() !== "" ? annotated : null
})

const HEX_TRACE_ID = /^[0-9a-f]{32}$/
const HEX_SPAN_ID = /^[0-9a-f]{16}$/

/** The W3C traceparent of a span, or null when its ids are not W3C-shaped (another tracer's format). */
export const formatTraceparent = (span: Tracer.AnySpan): string | null =>
  HEX_TRACE_ID.test(span.traceId) && HEX_SPAN_ID.test(span.spanId) && !/^0+$/.test(span.traceId) && !/^0+$/.test(span.spanId)
    ? `00-${span.traceId}-${span.spanId}-${span.sampled ? "01" : "00"}`
    : null

/** The current span's traceparent, when the current span has a parent (the caller's trace). */
export const currentTraceparent: Effect.Effect<string | null> = Effect.gen(function* () {
  if (yield* Tracer.DisablePropagation) return null
  const span = yield* Effect.option(Effect.currentSpan)
  if (Option.isNone(span) || Option.isNone(span.value.parent)) return null
  return formatTraceparent(span.value)
})
