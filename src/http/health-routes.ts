/**
 * GET /healthz: is the relay loop alive and turning (a cycle completed recently)?
 * GET /readyz: are PostgreSQL and Kafka reachable now (live checks, short timeouts)? And is
 * anything waiting on an operator (dead letters whose topic is missing, rows stuck beyond the
 * settings: "degraded", from the backlog gauges' last read)?
 * Both answer JSON, 200 or 503.
 */
import { Clock, Duration, Effect, Ref } from "effect"
import { HttpRouter } from "effect/http"
import { SqlClient } from "effect/sql"
import { RelayConfig } from "../config/config.ts"
import { Publisher } from "../kafka/publisher.ts"
import { describeKafkaProblem } from "../kafka/startup-check.ts"
import { degradedReport } from "../ops/backlog-problems.ts"
import { OutboxBacklog } from "../outbox/backlog.ts"
import { sqlErrorMessage } from "../outbox/sql-error.ts"
import { RelayState } from "../relay/relay-state.ts"
import { json } from "./responses.ts"

export interface CheckResult {
  readonly ok: boolean
  readonly latency_ms: number
  readonly error?: string
}

/** Runs one dependency check with a time limit; never fails, the result says what happened. */
export const runCheck = <E>(check: Effect.Effect<unknown, E>, timeoutMs: number, describe: (e: E) => string) =>
  Effect.gen(function* () {
    const started = yield* Clock.currentTimeMillis
    const result = yield* check.pipe(
      Effect.timeoutOrElse({ duration: Duration.millis(timeoutMs), orElse: () => Effect.fail(`timed out after ${timeoutMs} ms`) }),
      Effect.mapError((e) => (typeof e === "string" ? e : describe(e))),
      Effect.result,
    )
    const latency_ms = (yield* Clock.currentTimeMillis) - started
    return result._tag === "Success" ? { ok: true, latency_ms } : { ok: false, latency_ms, error: result.failure }
  }) satisfies Effect.Effect<CheckResult>

/** The live checks /readyz and /admin/status run: one query, one cluster round trip. */
export const dependencyChecks = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  const publisher = yield* Publisher
  const config = yield* RelayConfig
  return Effect.all(
    {
      database: runCheck(sql`SELECT 1`, config.readyTimeoutMs, sqlErrorMessage),
      kafka: runCheck(publisher.checkReachable, config.readyTimeoutMs, (e) => describeKafkaProblem(e.message, config)),
    },
    { concurrency: "unbounded" },
  ).pipe(
    // Probes come every few seconds; their queries are not worth a trace each.
    Effect.withTracerEnabled(false),
  )
})

export const HealthRoutes = HttpRouter.use((router) =>
  Effect.gen(function* () {
    const state = yield* RelayState
    const config = yield* RelayConfig
    const checks = yield* dependencyChecks
    const backlog = yield* OutboxBacklog
    // Until the first cycle, the loop's age counts from here: a starting relay is not a stalled one.
    const startedAt = yield* Clock.currentTimeMillis

    yield* router.add(
      "GET",
      "/healthz",
      Effect.gen(function* () {
        const lastCycleAt = yield* Ref.get(state.lastCycleAt)
        const ageMs = (yield* Clock.currentTimeMillis) - (lastCycleAt > 0 ? lastCycleAt : startedAt)
        const stalled = ageMs > config.healthStallMs
        const status = stalled ? "stalled" : lastCycleAt > 0 ? "ok" : "starting"
        return json(
          {
            status,
            paused: yield* Ref.get(state.paused),
            stopping: yield* Ref.get(state.stopping),
            waiting_for_kafka: !(yield* Ref.get(state.kafkaReachable)),
            last_cycle_at: lastCycleAt > 0 ? new Date(lastCycleAt).toISOString() : null,
            last_cycle_age_ms: ageMs,
            stall_after_ms: config.healthStallMs,
            last_error: (yield* Ref.get(state.lastError)) ?? null,
          },
          stalled ? 503 : 200,
        )
      }),
    )

    yield* router.add(
      "GET",
      "/readyz",
      Effect.gen(function* () {
        const results = yield* checks
        const stopping = yield* Ref.get(state.stopping)
        const ready = results.database.ok && results.kafka.ok && !stopping
        // Degraded is still 200: the relay goes on with every key the problem does not touch,
        // and a 503 would take it out of service discovery (and its metrics out of scrapes)
        // exactly when the operator needs them, without fixing anything. The reasons say what to do.
        const degraded = degradedReport(yield* backlog.latest, config)
        const status = !ready ? "not_ready" : degraded.length > 0 ? "degraded" : "ready"
        return json({ status, stopping, checks: results, degraded }, ready ? 200 : 503)
      }),
    )
  }),
)
