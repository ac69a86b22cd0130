/**
 * The admin API, behind `Authorization: Bearer <ADMIN_TOKEN>`: status, pause/resume,
 * dead-letter listing and replay (the same DeadLetterStore as the CLI, audited with
 * origin "admin-api"), and the rows that wait unseen: listed, and freed (audited the same way). Without ADMIN_TOKEN none of these routes exist (404).
 */
import { Effect, Layer, type Redacted, Ref, Result } from "effect"
import { HttpRouter, HttpServerRequest } from "effect/http"
import { RelayConfig } from "../config/config.ts"
import type { DatabaseError } from "../domain/errors.ts"
import { degradedReport } from "../ops/backlog-problems.ts"
import { OutboxBacklog } from "../outbox/backlog.ts"
import { DeadLetterStore } from "../outbox/dead-letter-store.ts"
import { InstanceId } from "../outbox/instance-id.ts"
import { OutboxStore } from "../outbox/outbox-store.ts"
import { StuckRows } from "../outbox/stuck-rows.ts"
import { RelayState } from "../relay/relay-state.ts"
import { decodeDeadLetterQuery, decodeFreeRequest, decodeReplayRequest, decodeStuckQuery } from "./admin-requests.ts"
import { bearerTokenCheck } from "./bearer-auth.ts"
import { isBodyTooLarge, payloadTooLarge } from "./body-limit.ts"
import { dependencyChecks } from "./health-routes.ts"
import { badRequest, HttpProblem, json, respond, unavailable } from "./responses.ts"

/** The most replayed rows listed in a replay's answer; `count` is always the full number. */
const MAX_LISTED = 1000

const databaseUnavailable = (e: DatabaseError) => unavailable(`database unavailable: ${e.message}`)

const adminRoutes = (token: Redacted.Redacted<string>) =>
  Effect.gen(function* () {
    const state = yield* RelayState
    const store = yield* OutboxStore
    const deadLetters = yield* DeadLetterStore
    const stuck = yield* StuckRows
    const backlog = yield* OutboxBacklog
    const config = yield* RelayConfig
    const instanceId = yield* InstanceId
    const checks = yield* dependencyChecks
    const authorized = bearerTokenCheck(token)

    const requireToken = Effect.gen(function* () {
      const request = yield* HttpServerRequest.HttpServerRequest
      if (!authorized(request.headers.authorization)) {
        return yield* new HttpProblem({
          status: 401,
          error: "unauthorized",
          message: "missing or wrong bearer token",
          headers: { "www-authenticate": 'Bearer realm="outbox-relay admin"' },
        })
      }
    })

    /** Every admin route: the token first, then the handler; errors become JSON answers. */
    const admin = <R>(method: "GET" | "POST", path: `/admin/${string}`, handler: Effect.Effect<unknown, HttpProblem, R>) =>
      HttpRouter.route(
        method,
        path,
        respond(
          requireToken.pipe(
            Effect.andThen(handler),
            Effect.map((body) => json(body)),
          ),
        ),
      )

    const setPaused = (paused: boolean) =>
      Effect.gen(function* () {
        const was = yield* Ref.getAndSet(state.paused, paused)
        if (was !== paused) {
          yield* paused
            ? Effect.logWarning("relay paused through the admin API: no claims until resumed")
            : Effect.logInfo("relay resumed through the admin API")
        }
        return { paused, changed: was !== paused }
      })

    return [
      admin(
        "GET",
        "/admin/status",
        Effect.gen(function* () {
          const [live, counts] = yield* Effect.all([checks, Effect.result(store.countByStatus)], { concurrency: "unbounded" })
          const lastCycleAt = yield* Ref.get(state.lastCycleAt)
          return {
            instance_id: instanceId,
            paused: yield* Ref.get(state.paused),
            stopping: yield* Ref.get(state.stopping),
            kafka_reachable: live.kafka.ok,
            waiting_for_kafka: !(yield* Ref.get(state.kafkaReachable)),
            last_cycle_at: lastCycleAt > 0 ? new Date(lastCycleAt).toISOString() : null,
            last_error: (yield* Ref.get(state.lastError)) ?? null,
            counts: Result.isSuccess(counts) ? counts.success : null,
            checks: live,
            // From the backlog gauges' last read, as /readyz gives it.
            degraded: degradedReport(yield* backlog.latest, config),
          }
        }),
      ),
      admin("POST", "/admin/pause", setPaused(true)),
      admin("POST", "/admin/resume", setPaused(false)),
      admin(
        "GET",
        "/admin/dead-letters",
        Effect.gen(function* () {
          const params = yield* HttpServerRequest.ParsedSearchParams
          const selection = decodeDeadLetterQuery(params)
          if (Result.isFailure(selection)) return yield* badRequest(selection.failure)
          const rows = yield* deadLetters.list(selection.success).pipe(Effect.mapError(databaseUnavailable))
          return { count: rows.length, dead_letters: rows }
        }),
      ),
      admin(
        "POST",
        "/admin/replay",
        Effect.gen(function* () {
          const request = yield* HttpServerRequest.HttpServerRequest
          const body = yield* request.json.pipe(
            Effect.mapError((e) => (isBodyTooLarge(e) ? payloadTooLarge() : badRequest("the body must be a JSON object"))),
          )
          const replay = decodeReplayRequest(body)
          if (Result.isFailure(replay)) return yield* badRequest(replay.failure)
          const { selection, dryRun, actor } = replay.success
          const result = yield* deadLetters
            .replay(selection, { actor, origin: "admin-api", dryRun })
            .pipe(Effect.mapError(databaseUnavailable))
          if (!dryRun) {
            yield* Effect.logInfo("events replayed through the admin API").pipe(
              Effect.annotateLogs({ actor, count: result.events.length, audit_id: result.auditId ?? undefined }),
            )
          }
          return {
            dry_run: result.dryRun,
            status: selection.status,
            count: result.events.length,
            audit_id: result.auditId,
            events: result.events.slice(0, MAX_LISTED),
            truncated: result.events.length > MAX_LISTED,
          }
        }),
      ),
      admin(
        "GET",
        "/admin/stuck",
        Effect.gen(function* () {
          const params = yield* HttpServerRequest.ParsedSearchParams
          const limit = decodeStuckQuery(params)
          if (Result.isFailure(limit)) return yield* badRequest(limit.failure)
          return yield* stuck.list(limit.success).pipe(Effect.mapError(databaseUnavailable))
        }),
      ),
      admin(
        "POST",
        "/admin/stuck/free",
        Effect.gen(function* () {
          const request = yield* HttpServerRequest.HttpServerRequest
          const body = yield* request.json.pipe(
            Effect.mapError((e) => (isBodyTooLarge(e) ? payloadTooLarge() : badRequest("the body must be a JSON object"))),
          )
          const free = decodeFreeRequest(body)
          if (Result.isFailure(free)) return yield* badRequest(free.failure)
          const { selection, dryRun, actor } = free.success
          const result = yield* stuck.free(selection, { actor, origin: "admin-api", dryRun }).pipe(Effect.mapError(databaseUnavailable))
          if (!dryRun) {
            yield* Effect.logInfo("stuck rows freed through the admin API").pipe(
              Effect.annotateLogs({ actor, count: result.freed.length, audit_id: result.auditId ?? undefined }),
            )
          }
          return {
            dry_run: result.dryRun,
            count: result.freed.length,
            audit_id: result.auditId,
            freed: result.freed.slice(0, MAX_LISTED),
            truncated: result.freed.length > MAX_LISTED,
            not_freed: result.notFreed,
          }
        }),
      ),
    ]
  })

export const AdminRoutes = Layer.unwrap(
  RelayConfig.useSync((config) =>
    config.adminToken === undefined
      ? Layer.empty
      : HttpRouter.addAll(adminRoutes(config.adminToken)).pipe(Layer.provide(Layer.mergeAll(DeadLetterStore.layer, StuckRows.layer))),
  ),
)
