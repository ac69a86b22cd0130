/**
 * Feeds outbox_new_count, outbox_failed_count and outbox_relay_lag_seconds from the
 * database every GAUGE_REFRESH_MS, in a background fiber for the life of the layer.
 * A failed read keeps the last values (and says so in the log); the next one retries.
 */
import { Duration, Effect, Layer, Metric, Schedule } from "effect"
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
    yield* refresh.pipe(
      Effect.repeat(Schedule.spaced(Duration.millis(config.gaugeRefreshMs))),
      // A query every few seconds is housekeeping, not something to trace.
      Effect.withTracerEnabled(false),
      Effect.forkScoped,
    )
  }),
).pipe(Layer.provide(OutboxBacklog.layer))
