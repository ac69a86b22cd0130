import { Effect } from "effect"
import { afterEach, describe, expect, it, vi } from "vitest"
import { loggerLayer } from "../../src/telemetry/logger.ts"

const captureLines = async (effect: Effect.Effect<void>) => {
  const lines: Array<Record<string, unknown>> = []
  const write = vi.spyOn(process.stdout, "write").mockImplementation((chunk) => {
    lines.push(JSON.parse(String(chunk)) as Record<string, unknown>)
    return true
  })
  try {
    await Effect.runPromise(effect.pipe(Effect.provide(loggerLayer("json", "debug"))))
  } finally {
    write.mockRestore()
  }
  return lines
}

describe("JSON log lines", () => {
  afterEach(() => vi.restoreAllMocks())

  it("carry the current span's trace_id and span_id, skip untraced sections, and have none outside a span", async () => {
    let outer = { traceId: "", spanId: "" }
    const lines = await captureLines(
      Effect.gen(function* () {
        yield* Effect.logInfo("no span")
        yield* Effect.gen(function* () {
          const span = yield* Effect.currentSpan
          outer = { traceId: span.traceId, spanId: span.spanId }
          yield* Effect.logInfo("in span")
          yield* Effect.logInfo("untraced").pipe(Effect.withSpan("inner"), Effect.withTracerEnabled(false))
        }).pipe(Effect.withSpan("outer"))
      }).pipe(Effect.orDie),
    )
    expect(lines.map((l) => l.message)).toEqual(["no span", "in span", "untraced"])
    expect(lines[0]).not.toHaveProperty("trace_id")
    expect(lines[1]).toMatchObject({ trace_id: outer.traceId, span_id: outer.spanId })
    expect(lines[2]).toMatchObject({ trace_id: outer.traceId, span_id: outer.spanId })
  })
})
