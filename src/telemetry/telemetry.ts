/**
 * The OpenTelemetry layer: Effect metrics go to the Prometheus exporter (served at
 * GET /metrics), and spans go to the exporter OTEL_TRACES_EXPORTER chooses (OTLP over
 * HTTP as protobuf or JSON, Zipkin, the console). With tracing off no tracer is installed,
 * the relay makes no per-event spans at all, and the tracing modules (the Node SDK, the
 * exporters and what they import) are not even loaded: only the metrics side is.
 */
import * as OtelMetrics from "@effect/opentelemetry/OtelMetrics"
import * as Resource from "@effect/opentelemetry/Resource"
import { Effect, Layer, Metric } from "effect"
import { RelayConfig, type RelayConfigShape } from "../config/config.ts"
import { producerRecreations } from "../kafka/publisher.ts"
import {
  deadLetters,
  leasesLost,
  leaseTakeovers,
  publishDead,
  publishFailed,
  publishSent,
  spansDroppedExportFailed,
  spansDroppedQueueFull,
  traceExportsFailed,
  traceExportsSucceeded,
} from "./metrics.ts"
import { PrometheusScrape } from "./prometheus.ts"
import { TracingEnabled } from "./publish-spans.ts"
import { makeTraceExportRecorder, TraceExportHealth } from "./trace-export-health.ts"
import { describeTraceExport, type TraceExport, traceExportOf } from "./trace-export-settings.ts"

// Counters exist on the first scrape, at 0: a series that appears only after the first
// failure breaks rate() and alerts written against it.
const registerCounters = Layer.effectDiscard(
  Effect.forEach(
    [
      publishSent,
      publishFailed,
      publishDead,
      deadLetters,
      leaseTakeovers,
      leasesLost,
      producerRecreations,
      traceExportsSucceeded,
      traceExportsFailed,
      spansDroppedExportFailed,
      spansDroppedQueueFull,
    ],
    (counter) => Metric.update(counter, 0),
  ),
)

/** What NodeSdk.layer builds for a metric reader alone, without importing the SDK's tracing side. */
const metricsOnly = (serviceName: string, scrape: PrometheusScrape["Service"]) =>
  OtelMetrics.layer(() => scrape.reader, { shutdownTimeout: "5 seconds" }).pipe(
    Layer.provideMerge(Resource.layerFromEnv(Resource.configToAttributes({ serviceName }))),
  )

/** Metrics and traces; the tracing modules load only here, and only the chosen exporter's. */
const withTracing = (config: RelayConfigShape, scrape: PrometheusScrape["Service"], choice: Exclude<TraceExport, { _tag: "none" }>) =>
  Effect.gen(function* () {
    const tracing = yield* Effect.promise(async () => {
      const [NodeSdk, loaded] = await Promise.all([
        import("@effect/opentelemetry/NodeSdk"),
        import("./trace-exporter.ts").then((m) => m.loadTracing(choice, config)),
      ])
      return { NodeSdk, ...loaded }
    })
    const recorder = yield* makeTraceExportRecorder(describeTraceExport(choice))
    const context = yield* Effect.context<never>()
    // One diagnostic logger per process: the SDK's only report of spans its full queue dropped.
    tracing.diag.setLogger(tracing.queueDropCounter(recorder, context), tracing.DiagLogLevel.WARN)
    yield* Effect.addFinalizer(() => Effect.sync(() => tracing.diag.disable()))
    const exporter = new tracing.WatchedExporter(
      tracing.exporter,
      recorder,
      context,
      choice._tag === "zipkin" ? choice.timeoutMs : undefined,
    )
    // Batching (queue size, delay, export timeout) reads the standard OTEL_BSP_* variables.
    const sdk = tracing.NodeSdk.layer(() => ({
      resource: { serviceName: config.otelServiceName },
      metricReader: scrape.reader,
      spanProcessor: new tracing.BatchSpanProcessor(exporter),
      tracerConfig: { sampler: tracing.sampler },
      shutdownTimeout: "5 seconds",
    }))
    return Layer.mergeAll(sdk, Layer.succeed(TraceExportHealth, { status: recorder.status }))
  })

export const TelemetryLive = Layer.unwrap(
  Effect.gen(function* () {
    const config = yield* RelayConfig
    const scrape = yield* PrometheusScrape
    const choice = traceExportOf(config)
    const sdk = choice._tag === "none" ? metricsOnly(config.otelServiceName, scrape) : yield* withTracing(config, scrape, choice)
    yield* Effect.logInfo(
      choice._tag === "none" ? "tracing off (OTEL_TRACES_EXPORTER=none, or no OTLP endpoint set)" : "exporting traces",
    ).pipe(Effect.annotateLogs(describeTraceExport(choice)))
    return Layer.mergeAll(sdk, registerCounters, Layer.succeed(TracingEnabled, choice._tag !== "none"))
  }),
).pipe(Layer.provideMerge(PrometheusScrape.layer))
