/**
 * What the relay loop did, as a stream a test (or an embedding service) can wait on: "this
 * batch is marked", "a claim found nothing". A test that must show something did *not*
 * happen waits for the event that proves the loop is past the point where it would have,
 * instead of sleeping. Nobody listening costs one publish to an empty PubSub per batch.
 */
import { Context, Effect, Layer, PubSub, type Scope, Stream } from "effect"
import type { BatchSummary } from "./mark-outcome.ts"

export type RelayEvent =
  | { readonly _tag: "ClaimedNothing" }
  /** A trigger (tick or wake-up) came while paused or stopping, and claimed nothing. */
  | { readonly _tag: "TriggerIgnored" }
  | { readonly _tag: "BatchMarked"; readonly ids: ReadonlyArray<string>; readonly summary: BatchSummary }
  | { readonly _tag: "LeasesReleased"; readonly count: number }

export class RelayEvents extends Context.Service<
  RelayEvents,
  {
    readonly emit: (event: RelayEvent) => Effect.Effect<void>
    /** Events from the moment of subscribing (inside the caller's scope). */
    readonly subscribe: Effect.Effect<Stream.Stream<RelayEvent>, never, Scope.Scope>
  }
>()("outbox-relay/RelayEvents") {
  static readonly layer = Layer.effect(
    RelayEvents,
    Effect.gen(function* () {
      // Sliding: a slow listener loses old events rather than slowing the relay down.
      const hub = yield* PubSub.sliding<RelayEvent>(4096)
      return RelayEvents.of({
        emit: (event) => PubSub.publish(hub, event).pipe(Effect.asVoid),
        subscribe: PubSub.subscribe(hub).pipe(Effect.map((sub) => Stream.fromSubscription(sub))),
      })
    }),
  )
}
