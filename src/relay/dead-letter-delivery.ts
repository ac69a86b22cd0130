/**
 * Puts dead letters on the dead-letter topic, falling back step by step: all in one request;
 * if the topic refuses that, one by one, each trimmed (no value, none of the row's headers)
 * when its full form is refused, and `Refused` when even that is (the row keeps everything
 * for replay). A missing or unreachable topic leaves a letter `Undelivered`: it is never
 * dropped. Every send asks the batch's budget first; a letter with no time left is `Untried`.
 */
import { Clock, Effect, Result } from "effect"
import { RelayConfig } from "../config/config.ts"
import type { KafkaPublishError, KafkaUnavailable, KafkaUnknownTopic } from "../domain/errors.ts"
import { type DeadLetter, type DeadLetterShape, deadLetterRecord } from "../kafka/dead-letter-record.ts"
import { Publisher } from "../kafka/publisher.ts"
import type { SendBudget } from "./lease-keeper.ts"

export type LetterResult =
  | { readonly _tag: "Delivered"; readonly letter: DeadLetter; readonly shape: DeadLetterShape }
  | { readonly _tag: "Refused"; readonly letter: DeadLetter; readonly error: string }
  | { readonly _tag: "Undelivered"; readonly letter: DeadLetter; readonly error: KafkaUnavailable | KafkaUnknownTopic }
  | { readonly _tag: "Untried"; readonly letter: DeadLetter }

/** Why the letters after a failure are not tried: the topic is unreachable, or the batch is out of time. */
type Stop = KafkaUnavailable | KafkaUnknownTopic | "out_of_time"

const unsent = (letter: DeadLetter, stop: Stop): LetterResult =>
  stop === "out_of_time" ? { _tag: "Untried", letter } : { _tag: "Undelivered", letter, error: stop }

export const deliverDeadLetters = Effect.fnUntraced(function* (letters: ReadonlyArray<DeadLetter>, budget: SendBudget) {
  if (letters.length === 0) return []
  const publisher = yield* Publisher
  const config = yield* RelayConfig
  const now = yield* Clock.currentTimeMillis
  const send = (batch: ReadonlyArray<DeadLetter>, shape: DeadLetterShape) =>
    Effect.flatMap(
      budget.allowsSend,
      (allowed): Effect.Effect<Result.Result<unknown, KafkaPublishError | "out_of_time">> =>
        allowed
          ? Effect.result(publisher.publish(batch.map((l) => deadLetterRecord(l, config.dlqTopic, now, shape))))
          : Effect.succeed(Result.fail("out_of_time")),
    )

  const all = yield* send(letters, "full")
  if (Result.isSuccess(all)) return letters.map((letter): LetterResult => ({ _tag: "Delivered", letter, shape: "full" }))
  if (all.failure === "out_of_time" || all.failure._tag !== "KafkaRejected") {
    const stop = all.failure
    return letters.map((letter) => unsent(letter, stop))
  }

  /** One letter alone: full (unless it was alone already), then trimmed. */
  const deliverOne = (letter: DeadLetter): Effect.Effect<LetterResult> =>
    Effect.gen(function* () {
      if (letters.length > 1) {
        const full = yield* send([letter], "full")
        if (Result.isSuccess(full)) return { _tag: "Delivered", letter, shape: "full" } satisfies LetterResult
        if (full.failure === "out_of_time" || full.failure._tag !== "KafkaRejected") return unsent(letter, full.failure)
      }
      const trimmed = yield* send([letter], "trimmed")
      if (Result.isSuccess(trimmed)) return { _tag: "Delivered", letter, shape: "trimmed" } satisfies LetterResult
      if (trimmed.failure === "out_of_time" || trimmed.failure._tag !== "KafkaRejected") return unsent(letter, trimmed.failure)
      return { _tag: "Refused", letter, error: trimmed.failure.message } satisfies LetterResult
    })

  // One by one, in id order; once the topic is unreachable or time is up, the rest wait untried.
  return yield* Effect.reduce(
    letters,
    (): ReadonlyArray<LetterResult> => [],
    (results, letter): Effect.Effect<ReadonlyArray<LetterResult>> => {
      const last = results.at(-1)
      if (last !== undefined && (last._tag === "Untried" || (last._tag === "Undelivered" && last.error.haltsPublishing))) {
        return Effect.succeed([...results, last._tag === "Untried" ? unsent(letter, "out_of_time") : unsent(letter, last.error)])
      }
      return Effect.map(deliverOne(letter), (result) => [...results, result])
    },
  )
})
