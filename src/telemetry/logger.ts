/**
 * Logs as JSON lines (one object per line: timestamp, level, message, then the
 * annotations flat: event_id, dedup_key, topic, error, trace_id…) for machines, or the
 * pretty console logger for people. Lines go to stdout, so a demo's SENT lines and the
 * relay's logs can be told apart only by content, never lost to buffering order.
 */
import { Cause, Context, Layer, Logger, Option, References, Tracer } from "effect"
import type { LogLevel } from "effect/LogLevel"
import { RelayConfig } from "../config/config.ts"

const LEVELS: Readonly<Record<string, LogLevel>> = {
  trace: "Trace",
  debug: "Debug",
  info: "Info",
  warn: "Warn",
  error: "Error",
  fatal: "Fatal",
  none: "None",
}

/**
 * The span a line belongs to: the current one, skipping the no-op spans of untraced
 * sections (they carry no real ids) up to the nearest traced ancestor.
 */
const tracedSpan = (span: Tracer.AnySpan | undefined): Tracer.AnySpan | undefined => {
  let current = span
  while (current !== undefined && Context.get(current.annotations, Tracer.DisablePropagation)) {
    current = current._tag === "Span" ? Option.getOrUndefined(current.parent) : undefined
  }
  return current
}

const jsonSafe = (_key: string, value: unknown) => (typeof value === "bigint" ? value.toString() : value)

export const jsonLogger = Logger.make<unknown, void>(({ message, logLevel, date, cause, fiber }) => {
  const annotations = fiber.getRef(References.CurrentLogAnnotations)
  const span = tracedSpan(Context.getOrUndefined(fiber.context, Tracer.ParentSpan))
  const line: Record<string, unknown> = {
    timestamp: date.toISOString(),
    level: logLevel.toLowerCase(),
    message: Array.isArray(message) ? message.map(String).join(" ") : String(message),
    ...annotations,
  }
  if (span !== undefined) {
    line.trace_id = span.traceId
    line.span_id = span.spanId
  }
  if (cause.reasons.length > 0) line.cause = Cause.pretty(cause)
  process.stdout.write(`${JSON.stringify(line, jsonSafe)}\n`)
})

export const loggerLayer = (format: "json" | "pretty", level: string) =>
  Layer.mergeAll(
    Logger.layer([format === "json" ? jsonLogger : Logger.consolePretty()]),
    Layer.succeed(References.MinimumLogLevel, LEVELS[level] ?? "Info"),
  )

export const LoggerLive = Layer.unwrap(RelayConfig.useSync((c) => loggerLayer(c.logFormat, c.logLevel)))
