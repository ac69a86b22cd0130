/**
 * Every answer of the API is JSON, errors included: `{ "error": code, "message": text }`.
 * Handlers fail with an HttpProblem; `respond` turns it into its response, and anything
 * unexpected into a logged 500, so no request can take the server down.
 */
import { Cause, Effect, Schema } from "effect"
import { HttpServerResponse } from "effect/http"

export class HttpProblem extends Schema.TaggedError<HttpProblem>()("HttpProblem", {
  status: Schema.Number,
  error: Schema.String,
  message: Schema.String,
  headers: Schema.optionalKey(Schema.Record(Schema.String, Schema.String)),
}) {}

export const badRequest = (message: string) => new HttpProblem({ status: 400, error: "bad_request", message })
export const unavailable = (message: string) => new HttpProblem({ status: 503, error: "unavailable", message })

export const json = (body: unknown, status = 200) => HttpServerResponse.jsonUnsafe(body, { status })

export const problemResponse = (p: HttpProblem) =>
  HttpServerResponse.jsonUnsafe({ error: p.error, message: p.message }, { status: p.status, headers: p.headers ?? {} })

export const respond = <R>(handler: Effect.Effect<HttpServerResponse.HttpServerResponse, HttpProblem, R>) =>
  handler.pipe(
    Effect.catchTag("HttpProblem", (p) => Effect.succeed(problemResponse(p))),
    Effect.catchCause((cause) =>
      Cause.hasInterruptsOnly(cause)
        ? Effect.failCause(cause)
        : Effect.logError("HTTP request failed").pipe(
            Effect.annotateLogs({ error: Cause.pretty(cause) }),
            Effect.as(json({ error: "internal_error", message: "the request failed; see the relay's log" }, 500)),
          ),
    ),
  )
