/**
 * The largest request body the relay reads. No endpoint needs more than a replay selector
 * (at most 10,000 ids or dedup keys); without a limit a caller with the admin token could
 * make the relay buffer any amount of memory.
 *
 * A declared Content-Length over the limit is answered 413 before a byte of the body is
 * read; a chunked body is read up to the limit and then refused (see `isBodyTooLarge`).
 * Either way the answer closes the connection, so the client stops sending.
 */
import { ByteSize, Effect } from "effect"
import { HttpIncomingMessage, HttpRouter, HttpServerRequest } from "effect/http"
import type { HttpServerError } from "effect/http/HttpServerError"
import { HttpProblem, problemResponse } from "./responses.ts"

export const MAX_BODY_BYTES = 64 * 1024

export const payloadTooLarge = () =>
  new HttpProblem({
    status: 413,
    error: "payload_too_large",
    message: `the request body is larger than ${MAX_BODY_BYTES} bytes`,
    headers: { connection: "close" },
  })

/** A body read failed because the body crossed MAX_BODY_BYTES (not because it was malformed). */
export const isBodyTooLarge = (e: HttpServerError): boolean => e.reason._tag === "RequestParseError" && e.reason.reason === "BodyTooLarge"

export const BodyLimit = HttpRouter.middleware(
  (httpEffect) =>
    Effect.gen(function* () {
      const request = yield* HttpServerRequest.HttpServerRequest
      const declared = request.headers["content-length"]
      if (declared !== undefined && Number(declared) > MAX_BODY_BYTES) return problemResponse(payloadTooLarge())
      return yield* httpEffect.pipe(Effect.provideService(HttpIncomingMessage.MaxBodySize, ByteSize.bytes(MAX_BODY_BYTES)))
    }),
  { global: true },
)
