/**
 * The chosen span exporter, with each export's outcome reported to the health recorder.
 * Loaded only when tracing is on: it imports the OpenTelemetry SDK.
 */
import type { DiagLogger } from "@opentelemetry/api"
import { type ExportResult, ExportResultCode } from "@opentelemetry/core"
import type { ReadableSpan, SpanExporter } from "@opentelemetry/sdk-trace-base"
import { type Context, Effect } from "effect"
import type { TraceExportRecorder } from "./trace-export-health.ts"

/** What the backend answered, as far as the exporter tells: OTLP errors carry the HTTP status and body. */
export const describeExportError = (error: unknown): string => {
  if (!(error instanceof Error)) return error === undefined ? "export failed (no reason given)" : String(error)
  const { code, data } = error as Error & { code?: unknown; data?: unknown }
  const status = typeof code === "number" ? ` (HTTP ${code})` : ""
  const body = typeof data === "string" && data.trim() !== "" ? `: ${data.trim().slice(0, 500)}` : ""
  return `${error.message}${status}${body}`
}

export class WatchedExporter implements SpanExporter {
  private readonly report: (effect: Effect.Effect<void>) => void
  private readonly inner: SpanExporter
  private readonly recorder: TraceExportRecorder
  /** Exporters without a time limit of their own (Zipkin's) get this one. */
  private readonly timeoutMs: number | undefined

  constructor(inner: SpanExporter, recorder: TraceExportRecorder, context: Context.Context<never>, timeoutMs: number | undefined) {
    this.inner = inner
    this.recorder = recorder
    this.timeoutMs = timeoutMs
    const run = Effect.runForkWith(context)
    this.report = (effect) => {
      run(effect)
    }
  }

  export(spans: Array<ReadableSpan>, resultCallback: (result: ExportResult) => void): void {
    let settled = false
    const settle = (result: ExportResult) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      this.report(
        result.code === ExportResultCode.SUCCESS
          ? this.recorder.exported
          : this.recorder.exportFailed(spans.length, describeExportError(result.error)),
      )
      // The failure is counted and warned above. Passed on, it would make the span processor's
      // flush reject, and a relay stopping while the backend is down would end with a defect
      // (seen once in the 500-backend test): tracing must never fail the relay.
      resultCallback({ code: ExportResultCode.SUCCESS })
    }
    const timer =
      this.timeoutMs === undefined
        ? undefined
        : setTimeout(
            () => settle({ code: ExportResultCode.FAILED, error: new Error(`no answer within ${this.timeoutMs} ms`) }),
            this.timeoutMs,
          )
    timer?.unref()
    try {
      this.inner.export(spans, settle)
    } catch (error) {
      settle({ code: ExportResultCode.FAILED, error: error instanceof Error ? error : new Error(String(error)) })
    }
  }

  shutdown(): Promise<void> {
    return this.inner.shutdown()
  }

  forceFlush(): Promise<void> {
    return this.inner.forceFlush?.() ?? Promise.resolve()
  }
}

/**
 * The batch processor's only report of spans it dropped because its queue was full is a
 * diagnostic warning, "Dropped N spans because maxQueueSize reached": it is counted here.
 */
export const queueDropCounter = (recorder: TraceExportRecorder, context: Context.Context<never>): DiagLogger => {
  const run = Effect.runForkWith(context)
  const read = (message: string) => {
    const dropped = /Dropped (\d+) spans/.exec(message)
    if (dropped !== null) run(recorder.queueDropped(Number(dropped[1])))
  }
  const ignore = () => {}
  return { error: ignore, warn: read, info: ignore, debug: ignore, verbose: ignore }
}
