/**
 * Feeds the backlog gauges from the database every GAUGE_REFRESH_MS, in a background fiber
 * for the life of the layer, and says in the log what waits on an operator: dead letters
 * waiting for their topic, rows stuck beyond the settings. A failed read keeps the last values
 * (and says so in the log); the next one retries.
 * The count grows with the backlog (~0.4 s of PostgreSQL CPU for 100k pending rows on a
 * cold cache), so reads are spaced to at least 20× their own duration: the gauges never
 * take more than ~5 % of a core from the relay they watch, however deep the backlog.
 */
import { Clock, Duration, Effect, Layer, Metric, Ref } from "effect"
import { RelayConfig } from "../config/config.ts"
import { type BacklogProblem, backlogProblems, problemCleared } from "../ops/backlog-problems.ts"
import { OutboxBacklog } from "../outbox/backlog.ts"
import { deadLetterWaiting, failedCount, newCount, oldestPendingAgeSeconds, relayLagSeconds, stalledKeys, stuckRows } from "./metrics.ts"

/** A problem that lasts is repeated this often: often enough to be seen in any log window, not a line per refresh. */
const REPEAT_WARNING_MS = 60_000

export const BacklogGaugesLive = Layer.effectDiscard(
  Effect.gen(function* () {
    const backlog = yield* OutboxBacklog
    const config = yield* RelayConfig
    // When each kind of problem was last logged; absent: not seen since it last cleared.
    const warnedAt = yield* Ref.make<ReadonlyMap<BacklogProblem["kind"], number>>(new Map())

    const sayWhatWaits = (problems: ReadonlyArray<BacklogProblem>) =>
      Effect.gen(function* () {
        const now = yield* Clock.currentTimeMillis
        const before = yield* Ref.get(warnedAt)
        const after = new Map<BacklogProblem["kind"], number>()
        for (const p of problems) {
          const last = before.get(p.kind)
          if (last === undefined || now - last >= REPEAT_WARNING_MS) {
            yield* Effect.logWarning(p.title).pipe(
              Effect.annotateLogs({
                problem: p.kind,
                count: p.count,
                action: p.action,
                ...(p.kind === "dead_letters_waiting"
                  ? { dlq_topic: config.dlqTopic, kafka_auto_create_topics: config.kafkaAutoCreateTopics }
                  : {}),
              }),
            )
            after.set(p.kind, now)
          } else after.set(p.kind, last)
        }
        for (const kind of before.keys()) {
          if (!after.has(kind)) yield* Effect.logInfo(problemCleared[kind]).pipe(Effect.annotateLogs({ problem: kind }))
        }
        yield* Ref.set(warnedAt, after)
      })

    const refresh = backlog.read.pipe(
      Effect.flatMap((b) =>
        Effect.all([
          Metric.update(newCount, b.newCount),
          Metric.update(failedCount, b.failedCount),
          Metric.update(relayLagSeconds, b.lagSeconds),
          Metric.update(oldestPendingAgeSeconds, b.oldestPendingSeconds),
          Metric.update(stalledKeys, b.stalledKeys),
          Metric.update(deadLetterWaiting, b.deadLetterWaiting),
          Metric.update(stuckRows, b.stuckRows),
          sayWhatWaits(backlogProblems(b, config)),
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
)
