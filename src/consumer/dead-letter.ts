/**
 * The consumer's dead-letter record: the original key, value and headers, plus why and
 * where it failed. `dlq.original_topic` tells a replay where to send it back; the inbox
 * makes such a replay safe to repeat.
 *
 * A dead letter the topic refuses for its size is sent again trimmed, in two steps (the
 * value omitted, then the original key and headers omitted too); `dlq.trimmed` says which,
 * and the original stays on its topic at `dlq.original_offset` until the topic's retention.
 */
import type { IHeaders } from "kafkajs"
import type { ConsumedMessage } from "./consumed-message.ts"

export type ConsumerDeadReason =
  | "handler_failed"
  | "inbox_rejected"
  | "missing_dedup_key"
  | "invalid_dedup_key"
  | "invalid_header"
  | "invalid_payload"
  | "oversized_headers"

export interface ConsumerDeadLetter {
  readonly message: ConsumedMessage
  readonly consumerGroup: string
  readonly reason: ConsumerDeadReason
  readonly error: string
  readonly attempts: number
}

/** How much of the original a dead letter carries: all of it, all but the value, or only the dlq.* headers. */
export type DeadLetterTrim = "none" | "value" | "value_key_headers"
export const DEAD_LETTER_TRIMS: ReadonlyArray<DeadLetterTrim> = ["none", "value", "value_key_headers"]

/** What `dlq.error` and a log line carry of an error text at most. */
export const MAX_ERROR_CHARS = 1000

/**
 * An error text fit to leave the process: no stack frames or file paths (they describe this
 * deployment, not the message), no NUL (PostgreSQL text refuses it), bounded.
 */
export const publicErrorText = (text: string): string =>
  text
    .split("\n")
    .filter((line) => !/^\s*at\s/.test(line))
    .join(" ")
    .replace(/\(?(?:file:\/\/)?(?:\/[\w.@+-]+)+\.[cm]?[jt]sx?(?::\d+){0,2}\)?/g, "<path>")
    .replaceAll("\u0000", "\\0")
    .replace(/\s+/g, " ")
    .trim()
    .slice(0, MAX_ERROR_CHARS)

const byteLength = (value: IHeaders[string]): number =>
  value === undefined
    ? 0
    : Array.isArray(value)
      ? value.reduce((n: number, v: Buffer | string) => n + Buffer.byteLength(v), 0)
      : Buffer.byteLength(value as Buffer | string)

export const deadLetterMessage = (letter: ConsumerDeadLetter, failedAt: Date, trim: DeadLetterTrim = "none") => {
  const { message } = letter
  // The bytes as received (a header that is not UTF-8 stays byte for byte what it was). Earlier
  // dlq.* headers (a replayed dead letter failing again) are replaced, not stacked.
  const original: IHeaders =
    trim === "value_key_headers" ? {} : Object.fromEntries(Object.entries(message.raw.headers).filter(([name]) => !name.startsWith("dlq.")))
  const headerBytes = Object.entries(message.raw.headers).reduce((n, [name, v]) => n + Buffer.byteLength(name) + byteLength(v), 0)
  return {
    key: trim === "value_key_headers" ? null : message.raw.key,
    value: trim === "none" ? message.raw.value : null,
    headers: {
      ...original,
      "dlq.reason": letter.reason,
      "dlq.error": publicErrorText(letter.error),
      "dlq.attempts": String(letter.attempts),
      "dlq.consumer_group": letter.consumerGroup,
      "dlq.original_topic": message.topic,
      "dlq.original_partition": String(message.partition),
      "dlq.original_offset": message.offset,
      "dlq.failed_at": failedAt.toISOString(),
      ...(trim === "none"
        ? {}
        : {
            "dlq.trimmed": trim,
            "dlq.original_value_bytes": String(message.raw.value?.length ?? 0),
            "dlq.original_header_bytes": String(headerBytes),
          }),
    },
  }
}
