/**
 * The span processor and sampler for the chosen exporter. Each exporter package is imported
 * only when it is the one chosen, so the relay loads no more of the SDK than it uses.
 */
import type { Sampler, SpanExporter } from "@opentelemetry/sdk-trace-base"
import type { RelayConfigShape } from "../config/config.ts"
import type { TraceExport } from "./trace-export-settings.ts"

type Chosen = Exclude<TraceExport, { readonly _tag: "none" }>

const loadExporter = async (choice: Chosen): Promise<SpanExporter> => {
  switch (choice._tag) {
    case "console": {
      const { ConsoleSpanExporter } = await import("@opentelemetry/sdk-trace-base")
      return new ConsoleSpanExporter()
    }
    case "zipkin": {
      const [{ ZipkinExporter }, { WholeMicrosecondsExporter }] = await Promise.all([
        import("@opentelemetry/exporter-zipkin"),
        import("./zipkin-timestamps.ts"),
      ])
      return new WholeMicrosecondsExporter(new ZipkinExporter({ url: choice.url }))
    }
    case "otlp": {
      const options = { url: choice.url, headers: { ...choice.headers }, timeoutMillis: choice.timeoutMs }
      if (choice.protocol === "http/json") {
        const { OTLPTraceExporter } = await import("@opentelemetry/exporter-trace-otlp-http")
        return new OTLPTraceExporter(options)
      }
      const { OTLPTraceExporter } = await import("@opentelemetry/exporter-trace-otlp-proto")
      return new OTLPTraceExporter(options)
    }
  }
}

/** The spec's samplers, from OTEL_TRACES_SAMPLER(_ARG) as the relay's settings read them. */
const loadSampler = async (config: RelayConfigShape): Promise<Sampler> => {
  const { AlwaysOffSampler, AlwaysOnSampler, ParentBasedSampler, TraceIdRatioBasedSampler } = await import("@opentelemetry/sdk-trace-base")
  const base = (name: string): Sampler =>
    name.endsWith("always_off")
      ? new AlwaysOffSampler()
      : name.endsWith("traceidratio")
        ? new TraceIdRatioBasedSampler(config.otelTracesSamplerArg)
        : new AlwaysOnSampler()
  const name = config.otelTracesSampler
  return name.startsWith("parentbased_") ? new ParentBasedSampler({ root: base(name) }) : base(name)
}

export const loadTracing = async (choice: Chosen, config: RelayConfigShape) => {
  const [exporter, sampler, { BatchSpanProcessor }, { diag, DiagLogLevel }, watched] = await Promise.all([
    loadExporter(choice),
    loadSampler(config),
    import("@opentelemetry/sdk-trace-base"),
    import("@opentelemetry/api"),
    import("./watched-exporter.ts"),
  ])
  return { exporter, sampler, BatchSpanProcessor, diag, DiagLogLevel, ...watched }
}
