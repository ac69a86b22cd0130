/** What the HTTP API and the loop share: paused or not, and when the loop last completed a cycle. */
import { Context, Effect, Layer, Ref } from "effect"
import { RelayConfig } from "../config/config.ts"

export class RelayState extends Context.Service<
  RelayState,
  {
    readonly paused: Ref.Ref<boolean>
    /** Epoch ms of the last completed poll cycle (claimed something or found nothing). */
    readonly lastCycleAt: Ref.Ref<number>
    readonly lastError: Ref.Ref<string | undefined>
    /** Set on SIGTERM: claim nothing more, finish the batch in flight. */
    readonly stopping: Ref.Ref<boolean>
    /** False while the loop waits for Kafka to come back. */
    readonly kafkaReachable: Ref.Ref<boolean>
  }
>()("outbox-relay/RelayState") {
  static readonly layer = Layer.effect(
    RelayState,
    Effect.gen(function* () {
      const config = yield* RelayConfig
      return RelayState.of({
        paused: yield* Ref.make(config.relayPaused),
        lastCycleAt: yield* Ref.make(0),
        lastError: yield* Ref.make<string | undefined>(undefined),
        stopping: yield* Ref.make(false),
        kafkaReachable: yield* Ref.make(true),
      })
    }),
  )
}
