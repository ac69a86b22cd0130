/** A Kafka message as the handler sees it: the relay's headers read out, the value decoded. */

import { isUtf8 } from "node:buffer"
import { Option, Result, Schema, type Tracer } from "effect"
import { Headers, HttpTraceContext } from "effect/http"
import type { IHeaders, KafkaMessage } from "kafkajs"
import { ROW_LIMITS } from "../domain/row-limits.ts"
import { UnprocessableMessage } from "./errors.ts"

/** The message before decoding: what a dedup-key function or the dead-letter record needs. */
export interface ConsumedMessage {
  readonly topic: string
  readonly partition: number
  readonly offset: string
  readonly key: string | null
  /** The value as sent: the outbox payload's JSON text. */
  readonly value: string | null
  /**
   * Every header that is valid UTF-8, as a string (a repeated header keeps its last value).
   * A header whose bytes are not UTF-8 is left out, and named in `malformedHeaders`.
   */
  readonly headers: Readonly<Record<string, string>>
  /** Headers whose bytes are not valid UTF-8: decoding them would map distinct bytes to one string. */
  readonly malformedHeaders: ReadonlyArray<string>
  readonly timestamp: string
  /** The bytes as received, so a dead letter carries exactly what came in. */
  readonly raw: {
    readonly key: Buffer | null
    readonly value: Buffer | null
    readonly headers: IHeaders
  }
}

/** What the handler gets: the message, the relay's correlation headers, and the decoded payload. */
export interface ConsumedEvent<A> extends ConsumedMessage {
  readonly dedupKey: string
  readonly eventId: string | null
  readonly eventType: string | null
  readonly requestId: string | null
  readonly traceparent: string | null
  readonly payload: A
  /** 1 on the first try, 2 on the first retry, … */
  readonly attempt: number
}

// fatal: invalid bytes are an error, not U+FFFD. Lossy decoding would make `k\xff` and `k\xfe` one key.
const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })

type HeaderText = { readonly _tag: "Text"; readonly text: string } | { readonly _tag: "Malformed" }

const headerText = (value: Buffer | string | ReadonlyArray<Buffer | string> | undefined): HeaderText | undefined => {
  if (value === undefined) return undefined
  if (typeof value === "string") return { _tag: "Text", text: value }
  if (Buffer.isBuffer(value)) {
    try {
      return { _tag: "Text", text: strictUtf8.decode(value) }
    } catch {
      return { _tag: "Malformed" }
    }
  }
  const last = value[value.length - 1]
  return last === undefined ? undefined : headerText(last)
}

export const fromKafkaMessage = (topic: string, partition: number, message: KafkaMessage): ConsumedMessage => {
  const headers: Record<string, string> = {}
  const malformedHeaders: Array<string> = []
  for (const [name, value] of Object.entries(message.headers ?? {})) {
    const text = headerText(value)
    if (text?._tag === "Text") headers[name] = text.text
    else if (text?._tag === "Malformed") malformedHeaders.push(name)
  }
  return {
    topic,
    partition,
    offset: message.offset,
    // The Kafka key is informational (the dedup key is a header), so a lossy decode is harmless here.
    key: message.key === null ? null : message.key.toString("utf8"),
    value: message.value === null ? null : message.value.toString("utf8"),
    headers,
    malformedHeaders,
    timestamp: message.timestamp,
    raw: { key: message.key, value: message.value, headers: message.headers ?? {} },
  }
}

// The relay's own bound on the columns these headers come from: every key it sends is taken.
const MAX_KEY_BYTES = ROW_LIMITS.dedupKeyBytes
const utf8 = new TextEncoder()

/** Why a text cannot be stored as-is in a PostgreSQL text column, if it cannot (NUL, too large for the index). */
const textProblem = (text: string): string | undefined =>
  text.includes("\u0000")
    ? "contains a NUL byte"
    : utf8.encode(text).length > MAX_KEY_BYTES
      ? `is longer than ${MAX_KEY_BYTES} bytes`
      : undefined

/**
 * Why a key cannot go into the inbox, if it cannot: a key PostgreSQL would refuse must be
 * dead-lettered, not retried forever as if the database were down. `malformed`: the header's
 * bytes were not UTF-8, so no string stands for them exactly.
 */
export const dedupKeyProblem = (key: string | undefined, malformed = false): UnprocessableMessage | undefined => {
  if (malformed) {
    return new UnprocessableMessage({ reason: "invalid_dedup_key", message: "dedup key header is not valid UTF-8" })
  }
  if (key === undefined || key.trim() === "") {
    return new UnprocessableMessage({ reason: "missing_dedup_key", message: "message has no dedup key (dedup_key header)" })
  }
  const problem = textProblem(key)
  return problem === undefined ? undefined : new UnprocessableMessage({ reason: "invalid_dedup_key", message: `dedup key ${problem}` })
}

/** Relay headers the consumer stores or hands on as text: each must be exact text PostgreSQL accepts. */
const CHECKED_HEADERS = ["event_id", "event_type"] as const

/** Why the message's event_id or event_type header cannot be used, if it cannot. */
export const headerProblem = (message: ConsumedMessage): UnprocessableMessage | undefined => {
  for (const name of CHECKED_HEADERS) {
    if (message.malformedHeaders.includes(name)) {
      return new UnprocessableMessage({ reason: "invalid_header", message: `${name} header is not valid UTF-8` })
    }
    const value = message.headers[name]
    const problem = value === undefined ? undefined : textProblem(value)
    if (problem !== undefined) return new UnprocessableMessage({ reason: "invalid_header", message: `${name} header ${problem}` })
  }
  return undefined
}

/** How much a message's headers may carry: kafkajs has decoded them already, but the consumer takes no more. */
export interface HeaderBounds {
  readonly maxHeaders: number
  readonly maxHeaderBytes: number
}

/** Why a message's headers are more than the consumer accepts, if they are (a repeated header counts each time). */
export const headerBoundsProblem = (message: ConsumedMessage, bounds: HeaderBounds): UnprocessableMessage | undefined => {
  let count = 0
  let bytes = 0
  for (const [name, value] of Object.entries(message.raw.headers)) {
    for (const v of Array.isArray(value) ? value : [value]) {
      count++
      bytes += Buffer.byteLength(name) + (v === undefined ? 0 : Buffer.byteLength(v))
    }
  }
  if (count > bounds.maxHeaders) {
    return new UnprocessableMessage({
      reason: "oversized_headers",
      message: `${count} headers, more than maxHeaders (${bounds.maxHeaders})`,
    })
  }
  if (bytes > bounds.maxHeaderBytes) {
    return new UnprocessableMessage({
      reason: "oversized_headers",
      message: `headers of ${bytes} bytes, more than maxHeaderBytes (${bounds.maxHeaderBytes})`,
    })
  }
  return undefined
}

/** What a log line carries of a key at most: a key of a megabyte must not become a megabyte per log line. */
export const MAX_LOGGED_KEY_CHARS = 200
export const loggedKey = (key: string | undefined): string =>
  key === undefined ? "" : key.length > MAX_LOGGED_KEY_CHARS ? `${key.slice(0, MAX_LOGGED_KEY_CHARS)}…(${key.length} chars)` : key

/** The relay's dedup_key header: the event's business identity, stable across rewrites and replays. */
export const dedupKeyHeader = (message: ConsumedMessage): string | undefined => {
  const key = message.headers.dedup_key
  return key !== undefined && key.trim() !== "" ? key : undefined
}

/** The value decoded as JSON, then with the payload schema. */
export const decodePayload =
  <A>(schema: Schema.Decoder<A>) =>
  (message: ConsumedMessage): Result.Result<A, UnprocessableMessage> => {
    let json: unknown = null
    // JSON text is UTF-8: a value that is not would reach the handler with U+FFFD in place of its bytes.
    if (message.raw.value !== null && !isUtf8(message.raw.value)) {
      return Result.fail(new UnprocessableMessage({ reason: "invalid_payload", message: "value is not valid UTF-8" }))
    }
    if (message.value !== null) {
      try {
        json = JSON.parse(message.value)
      } catch (error) {
        return Result.fail(new UnprocessableMessage({ reason: "invalid_payload", message: `value is not JSON: ${String(error)}` }))
      }
    }
    const decoded = Schema.decodeUnknownResult(schema)(json)
    return Result.isSuccess(decoded)
      ? Result.succeed(decoded.success)
      : Result.fail(
          new UnprocessableMessage({ reason: "invalid_payload", message: `payload rejected by its schema: ${decoded.failure.message}` }),
        )
  }

/** The span the message's traceparent names, to parent the handler's span on (none: a new trace). */
export const externalParent = (message: ConsumedMessage): Option.Option<Tracer.ExternalSpan> =>
  message.headers.traceparent === undefined
    ? Option.none()
    : HttpTraceContext.w3c(Headers.fromInput({ traceparent: message.headers.traceparent }))

export const toConsumedEvent = <A>(message: ConsumedMessage, dedupKey: string, payload: A, attempt: number): ConsumedEvent<A> => ({
  ...message,
  dedupKey,
  eventId: message.headers.event_id ?? null,
  eventType: message.headers.event_type ?? null,
  requestId: message.headers.request_id ?? null,
  traceparent: message.headers.traceparent ?? null,
  payload,
  attempt,
})
