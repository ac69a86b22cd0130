import { assert, describe, it } from "@effect/vitest"
import { Effect, Logger, References } from "effect"
import { TestClock } from "effect/testing"
import { makeTraceExportRecorder } from "../../src/telemetry/trace-export-health.ts"
import { describeExportError } from "../../src/telemetry/watched-exporter.ts"

const captured = () => {
  const lines: Array<{ message: string; annotations: Record<string, unknown> }> = []
  const logger = Logger.make((options: Logger.Options<unknown>) => {
    lines.push({ message: String(options.message), annotations: { ...options.fiber.getRef(References.CurrentLogAnnotations) } })
  })
  return { lines, layer: Logger.layer([logger]) }
}

describe("trace export health", () => {
  it.effect("warns about failed exports at most once a minute, counting the failures in between", () => {
    const logs = captured()
    return Effect.gen(function* () {
      const recorder = yield* makeTraceExportRecorder({ exporter: "zipkin", endpoint: "http://z:9411/api/v2/spans" })
      assert.strictEqual((yield* recorder.status).state, "idle")
      yield* recorder.exportFailed(3, "Got unexpected status code from zipkin: 500")
      yield* TestClock.adjust("30 seconds")
      yield* recorder.exportFailed(2, "Got unexpected status code from zipkin: 500")
      yield* recorder.exportFailed(1, "Got unexpected status code from zipkin: 503")
      assert.strictEqual(logs.lines.length, 1)
      assert.deepStrictEqual(logs.lines[0]!.annotations, {
        exporter: "zipkin",
        endpoint: "http://z:9411/api/v2/spans",
        error: "Got unexpected status code from zipkin: 500",
        spans: 3,
        failures_since_last_warning: 0,
      })
      yield* TestClock.adjust("31 seconds")
      yield* recorder.exportFailed(4, "Got unexpected status code from zipkin: 500")
      assert.strictEqual(logs.lines.length, 2)
      assert.strictEqual(logs.lines[1]!.annotations.failures_since_last_warning, 2)
      const failing = yield* recorder.status
      assert.strictEqual(failing.state, "failing")
      assert.strictEqual(failing.exports_failed, 4)
      assert.strictEqual(failing.spans_dropped, 10)
      yield* recorder.exported
      assert.strictEqual((yield* recorder.status).state, "ok")
    }).pipe(Effect.provide(logs.layer))
  })

  it("says what the backend answered: the HTTP status and body of an OTLP error", () => {
    const otlp = Object.assign(new Error("Internal Server Error"), { code: 500, data: "storage is full\n" })
    assert.strictEqual(describeExportError(otlp), "Internal Server Error (HTTP 500): storage is full")
    assert.strictEqual(describeExportError(undefined), "export failed (no reason given)")
  })
})
