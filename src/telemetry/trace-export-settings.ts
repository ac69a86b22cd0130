/**
 * Where spans go, read from the settings the way the OpenTelemetry SDKs read them: the
 * signal-specific variable wins over the general one, and an OTLP base URL gets /v1/traces.
 * Pure, so the choice is tested without loading any exporter.
 */
import { Redacted } from "effect"
import type { RelayConfigShape } from "../config/config.ts"

export type TraceExport =
  | { readonly _tag: "none" }
  | { readonly _tag: "console" }
  | {
      readonly _tag: "otlp"
      readonly url: string
      readonly protocol: "http/protobuf" | "http/json"
      readonly headers: Readonly<Record<string, string>>
      readonly timeoutMs: number
    }
  | { readonly _tag: "zipkin"; readonly url: string; readonly timeoutMs: number }

/** The spec's default when OTLP is chosen without an endpoint. */
const OTLP_DEFAULT_BASE = "http://localhost:4318"

const tracesUrlFromBase = (base: string) => `${base.replace(/\/+$/, "")}/v1/traces`

/** Where OTLP spans go: the traces URL as given, else <base>/v1/traces, else undefined. */
export const otlpTracesUrl = (config: RelayConfigShape): string | undefined =>
  config.otelTracesEndpoint ?? (config.otelEndpoint === undefined ? undefined : tracesUrlFromBase(config.otelEndpoint))

export const traceExportOf = (config: RelayConfigShape): TraceExport => {
  const configuredUrl = otlpTracesUrl(config)
  // Unset keeps the relay's earlier rule (an endpoint turns tracing on), so an unconfigured
  // relay does not start exporting to localhost:4318 as the SDKs' default "otlp" would.
  const exporter = config.otelTracesExporter ?? (configuredUrl === undefined ? "none" : "otlp")
  switch (exporter) {
    case "none":
      return { _tag: "none" }
    case "console":
      return { _tag: "console" }
    case "zipkin":
      return { _tag: "zipkin", url: config.otelZipkinEndpoint, timeoutMs: config.otelZipkinTimeoutMs }
    case "otlp":
      return {
        _tag: "otlp",
        url: configuredUrl ?? tracesUrlFromBase(OTLP_DEFAULT_BASE),
        protocol: config.otelTracesProtocol ?? config.otelProtocol,
        headers: {
          ...(config.otelHeaders === undefined ? {} : Redacted.value(config.otelHeaders)),
          ...(config.otelTracesHeaders === undefined ? {} : Redacted.value(config.otelTracesHeaders)),
        },
        timeoutMs: config.otelTracesTimeoutMs ?? config.otelTimeoutMs,
      }
  }
}

/** How the choice reads in the startup log and in /readyz (no headers: they hold credentials). */
export const describeTraceExport = (choice: TraceExport): Readonly<Record<string, string>> => {
  switch (choice._tag) {
    case "none":
    case "console":
      return { exporter: choice._tag }
    case "zipkin":
      return { exporter: "zipkin", endpoint: choice.url }
    case "otlp":
      return { exporter: "otlp", protocol: choice.protocol, endpoint: choice.url }
  }
}
