/** The relay's services, composed once: configuration → logger, database, Kafka, store, loop state. */
import { Layer } from "effect"
import type { RelayConfig } from "./config/config.ts"
import { HttpApiLive } from "./http/http-server.ts"
import { Publisher } from "./kafka/publisher.ts"
import { KafkaStartupCheck } from "./kafka/startup-check.ts"
import { DeadLetterSignal } from "./ops/dead-letter-signal.ts"
import { OutboxBacklog } from "./outbox/backlog.ts"
import { DatabaseLive } from "./outbox/database.ts"
import { InstanceId } from "./outbox/instance-id.ts"
import { OutboxStore } from "./outbox/outbox-store.ts"
import { RetentionLive } from "./outbox/retention.ts"
import { RelayEvents } from "./relay/relay-events.ts"
import { RelayState } from "./relay/relay-state.ts"
import { BacklogGaugesLive } from "./telemetry/backlog-gauges.ts"
import { LoggerLive } from "./telemetry/logger.ts"
import { TelemetryLive } from "./telemetry/telemetry.ts"

export const ServicesLive = Layer.mergeAll(
  OutboxStore.layer,
  Publisher.layer,
  RelayState.layer,
  RelayEvents.layer,
  DeadLetterSignal.layer,
).pipe(Layer.provideMerge(Layer.mergeAll(DatabaseLive, InstanceId.layer)), Layer.provideMerge(LoggerLive))

/** Everything `run` needs, from a configuration layer (the environment, or a test's own). */
export const appLayer = <E>(config: Layer.Layer<RelayConfig, E>) => ServicesLive.pipe(Layer.provideMerge(config))

/**
 * What `run` adds around the loop: OpenTelemetry (metrics, and traces when an OTLP
 * endpoint is set), the HTTP API on HTTP_PORT, the backlog gauges, retention and the Kafka
 * startup check (an unreachable broker is logged even while there is nothing to send). Telemetry is
 * built first and closed last, so spans of the final batch are still flushed.
 */
export const runLayer = <E>(config: Layer.Layer<RelayConfig, E>) =>
  Layer.mergeAll(HttpApiLive, BacklogGaugesLive, RetentionLive, KafkaStartupCheck).pipe(
    // One backlog reader: the gauges refresh it, /readyz reads its last result.
    Layer.provideMerge(OutboxBacklog.layer),
    Layer.provideMerge(ServicesLive),
    Layer.provideMerge(TelemetryLive.pipe(Layer.provide(LoggerLive))),
    Layer.provideMerge(config),
  )
