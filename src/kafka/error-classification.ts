/**
 * The one place a kafkajs error is read: it becomes a tagged error with a reason, and
 * nothing downstream looks at the cause again. kafkajs wraps errors (retries exceeded,
 * non-retriable, aggregate), so the whole cause chain is searched for the broker's code.
 */
import { type KafkaPublishError, KafkaRejected, KafkaUnavailable, KafkaUnknownTopic } from "../domain/errors.ts"

/** Broker error codes no retry can fix: the record itself is unacceptable. */
const REJECTED: Readonly<Record<string, KafkaRejected["reason"]>> = {
  MESSAGE_TOO_LARGE: "message_too_large",
  RECORD_LIST_TOO_LARGE: "message_too_large",
  INVALID_RECORD: "invalid_record",
  CORRUPT_MESSAGE: "invalid_record",
  INVALID_TIMESTAMP: "invalid_record",
  INVALID_TOPIC_EXCEPTION: "invalid_record",
}

/** The idempotent producer's state is broken; kafkajs never recovers from these (#485, #598). */
const BROKEN_PRODUCER = new Set([
  "OUT_OF_ORDER_SEQUENCE_NUMBER",
  "UNKNOWN_PRODUCER_ID",
  "INVALID_PRODUCER_EPOCH",
  "DUPLICATE_SEQUENCE_NUMBER",
])

interface ErrorLike {
  readonly name?: unknown
  readonly type?: unknown
  readonly message?: unknown
  readonly cause?: unknown
  readonly originalError?: unknown
  readonly errors?: unknown
}

const isErrorLike = (u: unknown): u is ErrorLike => typeof u === "object" && u !== null

/** Every error in the chain: the error, its causes, and the members of aggregate errors. */
const causeChain = (error: unknown): ReadonlyArray<ErrorLike> => {
  const seen: Array<ErrorLike> = []
  const visit = (u: unknown, depth: number) => {
    if (!isErrorLike(u) || depth > 8 || seen.includes(u)) return
    seen.push(u)
    visit(u.cause, depth + 1)
    visit(u.originalError, depth + 1)
    if (Array.isArray(u.errors)) for (const e of u.errors) visit(e, depth + 1)
  }
  visit(error, 0)
  return seen
}

const describe = (e: ErrorLike): string => {
  const name = typeof e.name === "string" ? e.name : "Error"
  const type = typeof e.type === "string" ? ` ${e.type}` : ""
  const message = typeof e.message === "string" ? `: ${e.message}` : ""
  return `${name}${type}${message}`
}

export const classifyKafkaError = (error: unknown): KafkaPublishError => {
  const chain = causeChain(error)
  const types = chain.map((e) => (typeof e.type === "string" ? e.type : undefined)).filter((t) => t !== undefined)
  const message = chain.length > 0 ? describe(chain[chain.length - 1]!) : String(error)
  const rejected = types.find((t) => t in REJECTED)
  if (rejected !== undefined) {
    return new KafkaRejected({ reason: REJECTED[rejected]!, message, cause: error })
  }
  // The broker has no such topic: it may be created later, so not a reason to dead-letter at once.
  // Which topics of a request are missing is for the publisher to find out (its metadata).
  if (types.some((t) => t === "UNKNOWN_TOPIC_OR_PARTITION")) return new KafkaUnknownTopic({ topics: [], message, cause: error })
  if (types.some((t) => BROKEN_PRODUCER.has(t))) return new KafkaUnavailable({ reason: "producer_broken", message, cause: error })
  // Anything unrecognised (connection refused, leader moves, unknown errors) is treated as
  // transient: retrying is safe, dead-lettering is not undoable.
  return new KafkaUnavailable({ reason: "unreachable", message, cause: error })
}
