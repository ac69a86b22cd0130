/**
 * The Prometheus side of the metrics: one PrometheusExporter, registered with the
 * OpenTelemetry layer as its metric reader, whose text the relay's own HTTP server
 * serves at GET /metrics. The exporter's built-in server is never started, so there
 * is one port (HTTP_PORT) for everything.
 */
import { PrometheusExporter, PrometheusSerializer } from "@opentelemetry/exporter-prometheus"
import { Context, Effect, Layer, Schema } from "effect"

export class ScrapeFailed extends Schema.TaggedError<ScrapeFailed>()("ScrapeFailed", {
  message: Schema.String,
  cause: Schema.Defect(),
}) {}

/** The content type of the text exposition format the serializer writes. */
export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

export class PrometheusScrape extends Context.Service<
  PrometheusScrape,
  {
    /** Bound to the Effect metric registry by TelemetryLive; a reader serves one producer only. */
    readonly reader: PrometheusExporter
    /** The current metrics in the Prometheus text format. */
    readonly render: Effect.Effect<string, ScrapeFailed>
  }
>()("outbox-relay/PrometheusScrape") {
  static readonly layer = Layer.sync(PrometheusScrape, () => {
    const reader = new PrometheusExporter({ preventServerStart: true })
    // The exporter's own serializer, minus the otel_scope_name label it would add to every series.
    const serializer = new PrometheusSerializer(undefined, false, undefined, false, true)
    const render = Effect.tryPromise({
      try: () => reader.collect(),
      catch: (cause) => new ScrapeFailed({ message: `collecting metrics failed: ${String(cause)}`, cause }),
    }).pipe(
      Effect.tap(({ errors }) =>
        errors.length > 0
          ? Effect.logWarning("some metrics could not be collected").pipe(Effect.annotateLogs({ error: errors.map(String).join("; ") }))
          : Effect.void,
      ),
      Effect.map(({ resourceMetrics }) => serializer.serialize(resourceMetrics)),
    )
    return PrometheusScrape.of({ reader, render })
  })
}
