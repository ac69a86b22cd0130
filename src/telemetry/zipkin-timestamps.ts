/**
 * Zipkin takes timestamps as whole microseconds ("Expected a long" and HTTP 400 otherwise),
 * but the Zipkin exporter (2.12.0) sends a span's start as is, and Effect's spans start at a
 * nanosecond clock reading: every export of them was refused. This exporter rounds each
 * span's start down to its microsecond before handing it on.
 */
import type { HrTime } from "@opentelemetry/api"
import type { ExportResult } from "@opentelemetry/core"
import type { ReadableSpan, SpanExporter } from "@opentelemetry/sdk-trace-base"

const wholeMicroseconds = ([seconds, nanos]: HrTime): HrTime => [seconds, nanos - (nanos % 1000)]

const withWholeMicroseconds = (span: ReadableSpan): ReadableSpan =>
  new Proxy(span, {
    get: (target, property, receiver) =>
      property === "startTime" ? wholeMicroseconds(target.startTime) : Reflect.get(target, property, receiver),
  })

export class WholeMicrosecondsExporter implements SpanExporter {
  private readonly inner: SpanExporter
  constructor(inner: SpanExporter) {
    this.inner = inner
  }
  export(spans: Array<ReadableSpan>, resultCallback: (result: ExportResult) => void): void {
    this.inner.export(spans.map(withWholeMicroseconds), resultCallback)
  }
  shutdown(): Promise<void> {
    return this.inner.shutdown()
  }
  forceFlush(): Promise<void> {
    return this.inner.forceFlush?.() ?? Promise.resolve()
  }
}
