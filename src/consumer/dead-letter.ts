/**
 * The consumer's dead-letter record: the original key, value and headers, plus why and
 * where it failed. `dlq.original_topic` tells a replay where to send it back; the inbox
 * makes such a replay safe to repeat.
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

export interface ConsumerDeadLetter {
  readonly message: ConsumedMessage
  readonly consumerGroup: string
  readonly reason: ConsumerDeadReason
  readonly error: string
  readonly attempts: number
}

export const deadLetterMessage = (letter: ConsumerDeadLetter, failedAt: Date) => {
  const { message } = letter
  // The bytes as received (a header that is not UTF-8 stays byte for byte what it was). Earlier
  // dlq.* headers (a replayed dead letter failing again) are replaced, not stacked.
  const original: IHeaders = Object.fromEntries(Object.entries(message.raw.headers).filter(([name]) => !name.startsWith("dlq.")))
  return {
    key: message.raw.key,
    value: message.raw.value,
    headers: {
      ...original,
      "dlq.reason": letter.reason,
      "dlq.error": letter.error.slice(0, 1000),
      "dlq.attempts": String(letter.attempts),
      "dlq.consumer_group": letter.consumerGroup,
      "dlq.original_topic": message.topic,
      "dlq.original_partition": String(message.partition),
      "dlq.original_offset": message.offset,
      "dlq.failed_at": failedAt.toISOString(),
    },
  }
}
