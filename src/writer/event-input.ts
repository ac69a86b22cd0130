/**
 * What a service hands the writer, and the checks it passes before it reaches SQL. The
 * checks are pure (no database, no Effect context), so the Effect writer and the plain
 * `pg` form reject exactly the same events with the same messages.
 */
import { Context, Result, Schema } from "effect"
import { isReservedHeader } from "../domain/reserved-headers.ts"
import { ROW_LIMITS } from "../domain/row-limits.ts"
import { isValidTraceparent } from "../kafka/records.ts"

/** One event to append to the outbox, in the caller's transaction. */
export interface OutboxEventInput<Type extends string = string, Payload = unknown> {
  /** Selects the Kafka topic (TOPIC_MAP). */
  readonly eventType: Type
  /** The business identity of the event: a second write with the same key is a no-op. */
  readonly dedupKey: string
  /** Any JSON value (objects, arrays, strings, numbers, booleans, null); with a payload schema, its Type. */
  readonly payload: Payload
  /** The Kafka message key and the unit of ordering; without it the dedup_key is the key and order is not kept. */
  readonly aggregateKey?: string | null | undefined
  /** Extra Kafka headers. The relay's own names (event_id, dedup_key, …) are reserved. */
  readonly headers?: Readonly<Record<string, string>> | undefined
  /** Taken from the `RequestId` reference (or the `request_id` log annotation) when not given. */
  readonly requestId?: string | null | undefined
  /** A W3C traceparent; taken from the current span when not given. */
  readonly traceparent?: string | null | undefined
}

/** A payload schema per event type: the payload is encoded with it, and the encoded form must be JSON. */
export type PayloadSchemas = { readonly [eventType: string]: Schema.Codec<unknown, unknown> }

/** The event as a row of the outbox table, ready to insert. */
export interface OutboxRow {
  readonly dedup_key: string
  readonly event_type: string
  readonly aggregate_key: string | null
  readonly payload: Schema.Json
  readonly headers: Readonly<Record<string, string>>
  readonly request_id: string | null
  readonly traceparent: string | null
}

export interface InputProblem {
  /** Position in the batch (0 for a single write). */
  readonly index: number
  readonly field: string
  readonly message: string
}

export class InvalidOutboxEvent extends Schema.TaggedError<InvalidOutboxEvent>()("InvalidOutboxEvent", {
  problems: Schema.Array(Schema.Struct({ index: Schema.Number, field: Schema.String, message: Schema.String })),
}) {
  override get message(): string {
    return `Invalid outbox event: ${this.problems.map((p) => `[${p.index}] ${p.field} ${p.message}`).join("; ")}`
  }
}

/**
 * The largest event accepted: payload and headers as JSON text, in UTF-8 bytes. It matches
 * the relay's MAX_RECORD_BYTES default, which dead-letters anything larger, so an event the
 * relay could never publish is refused here, in the service's own transaction, instead.
 * Provide another value to change it (`Effect.provideService(MaxEventBytes, 2_000_000)`, or
 * the `maxEventBytes` option of the plain `pg` writer).
 */
export const MaxEventBytes = Context.Reference<number>("outbox-relay/MaxEventBytes", { defaultValue: () => 1_000_000 })
export const DEFAULT_MAX_EVENT_BYTES = 1_000_000

const utf8 = new TextEncoder()

const byteLength = (s: string) => utf8.encode(s).length

/**
 * The size of a JSON value as jsonb prints it (`payload::text`, the Kafka value): like
 * JSON.stringify, with a space after each `:` and `,`. Duplicate keys and number spellings
 * may differ by a few bytes; the relay measures again exactly.
 */
export const jsonbTextBytes = (value: Schema.Json): number => {
  if (value === null || typeof value !== "object") return byteLength(JSON.stringify(value))
  if (Array.isArray(value)) {
    let n = 2 + Math.max(0, value.length - 1) * 2
    for (const item of value) n += jsonbTextBytes(item)
    return n
  }
  const entries = Object.entries(value)
  let n = 2 + Math.max(0, entries.length - 1) * 2
  for (const [key, item] of entries) n += byteLength(JSON.stringify(key)) + 2 + jsonbTextBytes(item as Schema.Json)
  return n
}

const Headers = Schema.Record(Schema.String, Schema.String)
const decodeJson = Schema.decodeUnknownResult(Schema.Json)
const decodeHeaders = Schema.decodeUnknownResult(Headers)

/**
 * The same bounds the table's CHECK constraints enforce (ROW_LIMITS, migration 7), checked here
 * first so the caller gets every problem of a batch by field, not PostgreSQL's first one.
 */
const TEXT_LIMITS = {
  eventType: ROW_LIMITS.eventTypeBytes,
  dedupKey: ROW_LIMITS.dedupKeyBytes,
  aggregateKey: ROW_LIMITS.aggregateKeyBytes,
  requestId: ROW_LIMITS.requestIdBytes,
} as const

const checkKey = (value: unknown, field: keyof typeof TEXT_LIMITS, problems: Array<Omit<InputProblem, "index">>): string | undefined => {
  const limit = TEXT_LIMITS[field]
  if (typeof value !== "string") problems.push({ field, message: "must be a string" })
  else if (value.trim() === "") problems.push({ field, message: "must not be blank" })
  else if (utf8.encode(value).length > limit) problems.push({ field, message: `must be at most ${limit} bytes (UTF-8)` })
  else if (value.includes("\u0000")) problems.push({ field, message: "must not contain NUL characters" })
  else return value
  return undefined
}

const optionalText = (value: unknown, field: keyof typeof TEXT_LIMITS, problems: Array<Omit<InputProblem, "index">>): string | null => {
  if (value === undefined || value === null) return null
  return checkKey(value, field, problems) ?? null
}

/** The payload as JSON: encoded with its type's schema when there is one, then checked to be plain JSON. */
const encodePayload = (
  payload: unknown,
  schema: Schema.Codec<unknown, unknown> | undefined,
  problems: Array<Omit<InputProblem, "index">>,
): Schema.Json | undefined => {
  let encoded = payload
  if (schema !== undefined) {
    const result = Schema.encodeUnknownResult(schema)(payload)
    if (Result.isFailure(result)) {
      problems.push({ field: "payload", message: `does not match its event type's schema: ${result.failure.message}` })
      return undefined
    }
    encoded = result.success
  }
  // Schema.Json rejects undefined, functions, NaN/Infinity, bigint, Date and class instances:
  // JSON.stringify would silently turn those into null or drop them.
  const json = decodeJson(encoded)
  if (Result.isFailure(json)) {
    problems.push({ field: "payload", message: `must be a JSON value (${json.failure.message})` })
    return undefined
  }
  // jsonb cannot store \u0000.
  if (JSON.stringify(json.success).includes("\\u0000")) {
    problems.push({ field: "payload", message: "must not contain NUL characters" })
    return undefined
  }
  return json.success
}

/**
 * Checks one event and turns it into a row; `defaults` fill request_id and traceparent
 * when the input leaves them out (the Effect writer reads them from the context).
 */
export const toOutboxRow = (
  input: OutboxEventInput,
  index: number,
  options: {
    readonly schemas?: PayloadSchemas | undefined
    readonly requireSchema?: boolean | undefined
    readonly defaults?: { readonly requestId: string | null; readonly traceparent: string | null } | undefined
    readonly maxEventBytes?: number | undefined
  } = {},
): Result.Result<OutboxRow, ReadonlyArray<InputProblem>> => {
  const problems: Array<Omit<InputProblem, "index">> = []
  const eventType = checkKey(input.eventType, "eventType", problems)
  const dedupKey = checkKey(input.dedupKey, "dedupKey", problems)
  const aggregateKey = optionalText(input.aggregateKey, "aggregateKey", problems)
  // A request id from the context is bounded like a given one: the table would refuse it either way.
  const requestId = optionalText(input.requestId ?? options.defaults?.requestId, "requestId", problems)

  let traceparent = options.defaults?.traceparent ?? null
  if (input.traceparent !== undefined && input.traceparent !== null) {
    if (typeof input.traceparent === "string" && isValidTraceparent(input.traceparent)) traceparent = input.traceparent
    else problems.push({ field: "traceparent", message: "must be a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>)" })
  }

  let headers: Readonly<Record<string, string>> = {}
  if (input.headers !== undefined) {
    const decoded = decodeHeaders(input.headers)
    if (Result.isFailure(decoded)) problems.push({ field: "headers", message: `must be an object of strings (${decoded.failure.message})` })
    else {
      const reserved = Object.keys(decoded.success).filter(isReservedHeader)
      const withNul = Object.entries(decoded.success).filter(([name, value]) => name.includes("\u0000") || value.includes("\u0000"))
      if (reserved.length > 0) problems.push({ field: "headers", message: `uses names the relay sets itself: ${reserved.join(", ")}` })
      else if (withNul.length > 0) problems.push({ field: "headers", message: "must not contain NUL characters" })
      else headers = decoded.success
    }
  }

  const schema =
    eventType === undefined || options.schemas === undefined
      ? undefined
      : Object.hasOwn(options.schemas, eventType)
        ? options.schemas[eventType]
        : undefined
  if (eventType !== undefined && schema === undefined && options.requireSchema === true) {
    problems.push({ field: "eventType", message: `"${eventType}" has no payload schema in this writer` })
  }
  const payload = encodePayload(input.payload, schema, problems)

  if (payload !== undefined && eventType !== undefined && dedupKey !== undefined) {
    const limit = options.maxEventBytes ?? DEFAULT_MAX_EVENT_BYTES
    // What the relay's claim measures (OutboxStore.claimDue): the record's value and headers as
    // PostgreSQL prints them, the key, and the text columns that become headers.
    const bytes =
      jsonbTextBytes(payload) +
      jsonbTextBytes(headers) +
      byteLength(eventType) +
      byteLength(dedupKey) +
      byteLength(aggregateKey ?? dedupKey) +
      byteLength(requestId ?? "") +
      byteLength(traceparent ?? "")
    if (bytes > limit) {
      problems.push({
        field: "payload",
        message: `with its headers, keys and ids is ${bytes} bytes, over the limit of ${limit} (the relay's MAX_RECORD_BYTES would dead-letter it)`,
      })
    }
  }

  if (problems.length > 0 || eventType === undefined || dedupKey === undefined || payload === undefined) {
    return Result.fail(problems.map((p) => ({ index, ...p })))
  }
  return Result.succeed({
    dedup_key: dedupKey,
    event_type: eventType,
    aggregate_key: aggregateKey,
    payload,
    headers,
    request_id: requestId,
    traceparent,
  })
}

/** Every event of a batch checked; all problems reported together. */
export const toOutboxRows = (
  inputs: ReadonlyArray<OutboxEventInput>,
  options: Parameters<typeof toOutboxRow>[2] = {},
): Result.Result<ReadonlyArray<OutboxRow>, InvalidOutboxEvent> => {
  const rows: Array<OutboxRow> = []
  const problems: Array<InputProblem> = []
  inputs.forEach((input, index) => {
    const row = toOutboxRow(input, index, options)
    if (Result.isSuccess(row)) rows.push(row.success)
    else problems.push(...row.failure)
  })
  return problems.length > 0 ? Result.fail(new InvalidOutboxEvent({ problems })) : Result.succeed(rows)
}
