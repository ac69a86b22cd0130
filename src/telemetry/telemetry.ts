/**
 * The OpenTelemetry layer: Effect metrics go to the Prometheus exporter (served at
 * GET /metrics), and spans go over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT or
 * OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set. Without one, no tracer is installed and
 * the relay makes no per-event spans at all, and the tracing modules (the Node SDK, the OTLP
 * exporter and what they import) are not even loaded: only the metrics side is.
 */
import * as OtelMetrics from "@effect/opentelemetry/OtelMetrics"
import * as Resource from "@effect/opentelemetry/Resource"
import { Effect, Layer, Metric } from "effect"
import { RelayConfig, type RelayConfigShape } from "../config/config.ts"
import { producerRecreations } from "../kafka/publisher.ts"
import { deadLetters, leasesLost, leaseTakeovers, publishDead, publishFailed, publishSent } from "./metrics.ts"
import { PrometheusScrape } from "./prometheus.ts"
import { TracingEnabled } from "./publish-spans.ts"

/** Where spans go: the traces URL as given, else <base>/v1/traces (the OTLP/HTTP rule), else nowhere. */
export const otlpTracesUrl = (config: RelayConfigShape): string | undefined =>
  config.otelTracesEndpoint ?? (config.otelEndpoint === undefined ? undefined : `${config.otelEndpoint.replace(/\/+$/, "")}/v1/traces`)

// Counters exist on the first scrape, at 0: a series that appears only after the first
// failure breaks rate() and alerts written against it.
const registerCounters = Layer.effectDiscard(
  Effect.forEach([publishSent, publishFailed, publishDead, deadLetters, leaseTakeovers, leasesLost, producerRecreations], (counter) =>
    Metric.update(counter, 0),
  ),
)

/** What NodeSdk.layer builds for a metric reader alone, without importing the SDK's tracing side. */
const metricsOnly = (serviceName: string, scrape: PrometheusScrape["Service"]) =>
  OtelMetrics.layer(() => scrape.reader, { shutdownTimeout: "5 seconds" }).pipe(
    Layer.provideMerge(Resource.layerFromEnv(Resource.configToAttributes({ serviceName }))),
  )

/** Metrics and OTLP traces; the tracing modules load only here. */
const withTracing = (serviceName: string, scrape: PrometheusScrape["Service"], url: string) =>
  Effect.promise(async () => {
    const [NodeSdk, { OTLPTraceExporter }, { BatchSpanProcessor }] = await Promise.all([
      import("@effect/opentelemetry/NodeSdk"),
      import("@opentelemetry/exporter-trace-otlp-http"),
      import("@opentelemetry/sdk-trace-base"),
    ])
    // Headers, timeouts and batching of the exporter come from the standard OTEL_EXPORTER_OTLP_* / OTEL_BSP_* variables.
    return NodeSdk.layer(() => ({
      resource: { serviceName },
      metricReader: scrape.reader,
      spanProcessor: new BatchSpanProcessor(new OTLPTraceExporter({ url })),
      shutdownTimeout: "5 seconds",
    }))
  })

export const TelemetryLive = Layer.unwrap(
  Effect.gen(function* () {
    const config = yield* RelayConfig
    const scrape = yield* PrometheusScrape
    const tracesUrl = otlpTracesUrl(config)
    const sdk =
      tracesUrl === undefined ? metricsOnly(config.otelServiceName, scrape) : yield* withTracing(config.otelServiceName, scrape, tracesUrl)
    yield* Effect.logInfo(tracesUrl === undefined ? "tracing off (no OTLP endpoint set)" : "exporting traces over OTLP/HTTP").pipe(
      Effect.annotateLogs(tracesUrl === undefined ? {} : { endpoint: tracesUrl }),
    )
    return Layer.mergeAll(sdk, registerCounters, Layer.succeed(TracingEnabled, tracesUrl !== undefined))
  }),
).pipe(Layer.provideMerge(PrometheusScrape.layer))
