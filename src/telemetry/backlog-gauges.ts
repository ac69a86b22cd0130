/**
 * Feeds outbox_new_count, outbox_failed_count and outbox_relay_lag_seconds from the
 * database every GAUGE_REFRESH_MS, in a background fiber for the life of the layer.
 * A failed read keeps the last values (and says so in the log); the next one retries.
 * The count grows with the backlog (~0.4 s of PostgreSQL CPU for 100k pending rows on a
 * cold cache), so reads are spaced to at least 20× their own duration: the gauges never
 * take more than ~5 % of a core from the relay they watch, however deep the backlog.
 */
import { Clock, Duration, Effect, Layer, Metric } from "effect"
import { RelayConfig } from "../config/config.ts"
import { OutboxBacklog } from "../outbox/backlog.ts"
import { failedCount, newCount, relayLagSeconds } from "./metrics.ts"

export const BacklogGaugesLive = Layer.effectDiscard(
  Effect.gen(function* () {
    const backlog = yield* OutboxBacklog
    const config = yield* RelayConfig
    const refresh = backlog.read.pipe(
      Effect.flatMap((b) =>
        Effect.all([
          Metric.update(newCount, b.newCount),
          Metric.update(failedCount, b.failedCount),
          Metric.update(relayLagSeconds, b.lagSeconds),
        ]),
      ),
      Effect.catchTag("DatabaseError", (e) =>
        Effect.logWarning("backlog gauges not refreshed").pipe(Effect.annotateLogs({ error: e.message })),
      ),
    )
    const refreshThenWait = Effect.gen(function* () {
      const started = yield* Clock.currentTimeMillis
      yield* refresh
      const took = (yield* Clock.currentTimeMillis) - started
      yield* Effect.sleep(Duration.millis(Math.max(config.gaugeRefreshMs, 20 * took)))
    })
    yield* refreshThenWait.pipe(
      Effect.forever,
      // A query every few seconds is housekeeping, not something to trace.
      Effect.withTracerEnabled(false),
      Effect.forkScoped,
    )
  }),
).pipe(Layer.provide(OutboxBacklog.layer))
