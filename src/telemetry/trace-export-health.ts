/**
 * Whether spans reach the tracing backend. A failed export is counted, and said in a WARN
 * at most once a minute with the backend's answer; /readyz shows the state as a detail that
 * never makes the relay unready: tracing must never stop relaying.
 */
import { Clock, Context, Effect, Metric, Ref } from "effect"
import { spansDroppedExportFailed, spansDroppedQueueFull, traceExportsFailed, traceExportsSucceeded } from "./metrics.ts"

export interface TraceExportStatus {
  readonly exporter: string
  readonly endpoint?: string | undefined
  /** off: no exporter; idle: nothing exported yet; ok: the last export succeeded; failing: it failed. */
  readonly state: "off" | "idle" | "ok" | "failing"
  readonly exports_failed: number
  readonly spans_dropped: number
  readonly last_success_at?: string | undefined
  readonly last_failure_at?: string | undefined
  readonly last_error?: string | undefined
}

const WARN_EVERY_MS = 60_000

interface State {
  readonly status: TraceExportStatus
  /** When the last WARN was written; failures in between are only counted. */
  readonly warnedAtMs: number | undefined
  readonly unwarnedFailures: number
}

export interface TraceExportRecorder {
  readonly status: Effect.Effect<TraceExportStatus>
  readonly exported: Effect.Effect<void>
  readonly exportFailed: (spans: number, error: string) => Effect.Effect<void>
  readonly queueDropped: (spans: number) => Effect.Effect<void>
}

export const makeTraceExportRecorder = (described: Readonly<Record<string, string>>): Effect.Effect<TraceExportRecorder> =>
  Effect.map(
    Ref.make<State>({
      status: { exporter: described.exporter ?? "none", endpoint: described.endpoint, state: "idle", exports_failed: 0, spans_dropped: 0 },
      warnedAtMs: undefined,
      unwarnedFailures: 0,
    }),
    (state) => ({
      status: Effect.map(Ref.get(state), (s) => s.status),
      exported: Effect.gen(function* () {
        const now = new Date(yield* Clock.currentTimeMillis).toISOString()
        yield* Ref.update(state, (s): State => ({ ...s, status: { ...s.status, state: "ok", last_success_at: now } }))
        yield* Metric.update(traceExportsSucceeded, 1)
      }),
      exportFailed: (spans, error) =>
        Effect.gen(function* () {
          const nowMs = yield* Clock.currentTimeMillis
          const before = yield* Ref.get(state)
          const warn = before.warnedAtMs === undefined || nowMs - before.warnedAtMs >= WARN_EVERY_MS
          yield* Ref.set(state, {
            status: {
              ...before.status,
              state: "failing",
              exports_failed: before.status.exports_failed + 1,
              spans_dropped: before.status.spans_dropped + spans,
              last_failure_at: new Date(nowMs).toISOString(),
              last_error: error,
            },
            warnedAtMs: warn ? nowMs : before.warnedAtMs,
            unwarnedFailures: warn ? 0 : before.unwarnedFailures + 1,
          })
          yield* Metric.update(traceExportsFailed, 1)
          yield* Metric.update(spansDroppedExportFailed, spans)
          if (warn) {
            yield* Effect.logWarning("span export failed; these spans are lost (said at most once a minute)").pipe(
              Effect.annotateLogs({
                exporter: before.status.exporter,
                ...(before.status.endpoint === undefined ? {} : { endpoint: before.status.endpoint }),
                error,
                spans,
                failures_since_last_warning: before.unwarnedFailures,
              }),
            )
          }
        }).pipe(
          // The warning is about the backend, not about whatever span happened to be current.
          Effect.withTracerEnabled(false),
        ),
      queueDropped: (spans) =>
        Effect.gen(function* () {
          yield* Ref.update(state, (s): State => ({ ...s, status: { ...s.status, spans_dropped: s.status.spans_dropped + spans } }))
          yield* Metric.update(spansDroppedQueueFull, spans)
        }),
    }),
  )

const off: TraceExportStatus = { exporter: "none", state: "off", exports_failed: 0, spans_dropped: 0 }

/** The recorder of this relay's exporter; with tracing off, one that always says "off". */
export const TraceExportHealth = Context.Reference<{ readonly status: Effect.Effect<TraceExportStatus> }>(
  "outbox-relay/TraceExportHealth",
  { defaultValue: () => ({ status: Effect.succeed(off) }) },
)
