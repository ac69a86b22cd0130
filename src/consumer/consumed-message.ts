/** A Kafka message as the handler sees it: the relay's headers read out, the value decoded. */
import { Option, Result, Schema, type Tracer } from "effect"
import { Headers, HttpTraceContext } from "effect/http"
import type { KafkaMessage } from "kafkajs"
import { UnprocessableMessage } from "./errors.ts"

/** The message before decoding: what a dedup-key function or the dead-letter record needs. */
export interface ConsumedMessage {
  readonly topic: string
  readonly partition: number
  readonly offset: string
  readonly key: string | null
  /** The value as sent: the outbox payload's JSON text. */
  readonly value: string | null
  /** Every header as a string (a repeated header keeps its last value). */
  readonly headers: Readonly<Record<string, string>>
  readonly timestamp: string
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

const headerText = (value: Buffer | string | ReadonlyArray<Buffer | string> | undefined): string | undefined => {
  if (value === undefined) return undefined
  if (typeof value === "string") return value
  if (Buffer.isBuffer(value)) return value.toString("utf8")
  const last = value[value.length - 1]
  return last === undefined ? undefined : headerText(last)
}

export const fromKafkaMessage = (topic: string, partition: number, message: KafkaMessage): ConsumedMessage => {
  const headers: Record<string, string> = {}
  for (const [name, value] of Object.entries(message.headers ?? {})) {
    const text = headerText(value)
    if (text !== undefined) headers[name] = text
  }
  return {
    topic,
    partition,
    offset: message.offset,
    key: message.key === null ? null : message.key.toString("utf8"),
    value: message.value === null ? null : message.value.toString("utf8"),
    headers,
    timestamp: message.timestamp,
  }
}

const MAX_KEY_BYTES = 1000
const utf8 = new TextEncoder()

/**
 * Why a key cannot go into the inbox, if it cannot: a key PostgreSQL would refuse (NUL,
 * too large for the index) must be dead-lettered, not retried forever as if the database were down.
 */
export const dedupKeyProblem = (key: string | undefined): UnprocessableMessage | undefined => {
  if (key === undefined || key.trim() === "") {
    return new UnprocessableMessage({ reason: "missing_dedup_key", message: "message has no dedup key (dedup_key header)" })
  }
  if (key.includes("\u0000") || utf8.encode(key).length > MAX_KEY_BYTES) {
    return new UnprocessableMessage({
      reason: "invalid_dedup_key",
      message: `dedup key must be at most ${MAX_KEY_BYTES} bytes, without NUL`,
    })
  }
  return undefined
}

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
