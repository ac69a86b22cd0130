/**
 * What one seed draws: the relay's settings, the instances, a backlog with hot and cold keys
 * and poison among it, the writes over time, and faults at random points.
 */
import { Result } from "effect"
import { parseConfig, type RelayConfigShape } from "../../../src/config/config.ts"
import type { NewEvent } from "../../../src/domain/outbox-event.ts"
import type { Rng } from "./random.ts"

export const TOPICS = { search_click: "clicks", ac_select: "selects", ghost_event: "ghost" } as const
export const DLQ_TOPIC = "outbox.dlq"
/** The fake broker's marker for a record it refuses as invalid. */
export const POISON = "\u0000poison"

/** How an event is meant to be hard to relay (or not). */
export type EventKind = "normal" | "unknown_type" | "oversize" | "poison" | "poison_big_headers" | "missing_topic"

export interface ScheduledWrite {
  readonly at: number
  readonly events: ReadonlyArray<NewEvent & { readonly kind: EventKind }>
}

export type Fault =
  | { readonly _tag: "KafkaDown"; readonly at: number; readonly forMs: number }
  | { readonly _tag: "DatabaseDown"; readonly at: number; readonly forMs: number }
  | { readonly _tag: "DatabaseFlaky"; readonly at: number; readonly forMs: number; readonly rate: number }
  | { readonly _tag: "KafkaErrors"; readonly at: number; readonly forMs: number; readonly rate: number }
  | { readonly _tag: "KafkaTimeouts"; readonly at: number; readonly forMs: number; readonly rate: number }
  | { readonly _tag: "SlowSends"; readonly at: number; readonly forMs: number; readonly delayMs: number }
  | { readonly _tag: "Crash"; readonly at: number; readonly instance: number; readonly restartAfterMs: number | undefined }
  | { readonly _tag: "Pause"; readonly at: number; readonly instance: number; readonly forMs: number }
  | { readonly _tag: "GracefulStop"; readonly at: number; readonly instance: number }
  | { readonly _tag: "CreateTopic"; readonly at: number; readonly topic: string }

export interface Scenario {
  readonly seed: number
  readonly config: RelayConfigShape
  readonly instances: number
  readonly writes: ReadonlyArray<ScheduledWrite>
  readonly faults: ReadonlyArray<Fault>
  /** When every fault is healed; the run then goes on until every event is settled. */
  readonly healAt: number
  /** The dead-letter topic refuses records over this size (small: even trimmed letters are refused). */
  readonly dlqMaxRecordBytes: number
}

const baseConfig = Result.getOrThrow(
  parseConfig({ DATABASE_URL: "postgres://simulation/none", KAFKA_BROKERS: "simulation:9092", LOG_LEVEL: "none" }),
)

export const drawScenario = (seed: number, rng: Rng): Scenario => {
  const config: RelayConfigShape = {
    ...baseConfig,
    batchSize: rng.int(2, 8),
    leaseMs: 3_000,
    publishTimeoutMs: 500,
    pollIntervalMs: 1_000,
    busyPollIntervalMs: 200,
    maxAttempts: rng.int(2, 6),
    backoffBaseMs: 50,
    backoffMaxMs: 800,
    listenNotify: false,
    shutdownGraceMs: 3_000,
    maxRecordBytes: 600,
    topicMap: TOPICS,
    dlqTopic: DLQ_TOPIC,
  }
  const instances = rng.int(1, 4)
  const hot = ["hot-a", "hot-b"]
  const cold = Array.from({ length: rng.int(2, 12) }, (_, i) => `cold-${i}`)
  const eventCount = rng.int(8, 40)
  const kinds: ReadonlyArray<[EventKind, number]> = [
    ["unknown_type", 0.04],
    ["oversize", 0.04],
    ["poison", 0.04],
    ["poison_big_headers", 0.03],
    ["missing_topic", 0.05],
  ]
  const writes: Array<ScheduledWrite> = []
  let n = 0
  while (n < eventCount) {
    const size = Math.min(eventCount - n, rng.int(1, 6))
    const at = writes.length === 0 || rng.chance(0.3) ? 0 : rng.int(0, 2_500)
    const events = Array.from({ length: size }, () => {
      const i = n++
      const roll = rng.next()
      let acc = 0
      let kind: EventKind = "normal"
      for (const [k, p] of kinds) {
        acc += p
        if (roll < acc) {
          kind = k
          break
        }
      }
      const key = rng.chance(0.1) ? null : rng.chance(0.5) ? rng.pick(hot) : rng.pick(cold)
      return {
        kind,
        dedupKey: `s${seed}-e${i}`,
        eventType: kind === "unknown_type" ? "mystery" : kind === "missing_topic" ? "ghost_event" : rng.pick(["search_click", "ac_select"]),
        aggregateKey: key,
        payload:
          kind === "oversize"
            ? { blob: "x".repeat(1_000) }
            : kind === "poison" || kind === "poison_big_headers"
              ? { n: i, poison: POISON }
              : { n: i },
        headers: kind === "poison_big_headers" ? { big: "h".repeat(400) } : {},
      }
    })
    writes.push({ at, events })
  }
  writes.sort((a, b) => a.at - b.at)

  const faults: Array<Fault> = []
  const faultCount = rng.int(0, 6)
  for (let i = 0; i < faultCount; i++) {
    const at = rng.int(0, 3_500)
    const forMs = rng.int(100, 2_500)
    switch (rng.int(0, 9)) {
      case 0:
        faults.push({ _tag: "KafkaDown", at, forMs })
        break
      case 1:
        faults.push({ _tag: "DatabaseDown", at, forMs })
        break
      case 2:
        faults.push({ _tag: "DatabaseFlaky", at, forMs, rate: 0.2 })
        break
      case 3:
        faults.push({ _tag: "KafkaErrors", at, forMs, rate: 0.3 })
        break
      case 4:
        faults.push({ _tag: "KafkaTimeouts", at, forMs, rate: 0.3 })
        break
      case 5:
        // Longer than the lease at times: another instance takes the batch over mid-publish.
        faults.push({ _tag: "SlowSends", at, forMs, delayMs: rng.int(200, 3_500) })
        break
      case 6:
        faults.push({
          _tag: "Crash",
          at,
          instance: rng.int(0, instances - 1),
          restartAfterMs: rng.chance(0.6) ? rng.int(0, 2_000) : undefined,
        })
        break
      case 7:
        faults.push({ _tag: "Pause", at, instance: rng.int(0, instances - 1), forMs })
        break
      case 8:
        faults.push({ _tag: "GracefulStop", at, instance: rng.int(0, instances - 1) })
        break
      default:
        faults.push({ _tag: "CreateTopic", at, topic: TOPICS.ghost_event })
    }
  }
  faults.sort((a, b) => a.at - b.at)
  return {
    seed,
    config,
    instances,
    writes,
    faults,
    healAt: 6_000,
    dlqMaxRecordBytes: rng.chance(0.2) ? 100 : 700,
  }
}
