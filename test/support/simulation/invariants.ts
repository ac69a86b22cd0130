/**
 * What must hold after every simulated run, whatever the faults. Each check returns the
 * violations it found, described well enough to start debugging from the seed.
 */
import { retryDelayBounds } from "../../../src/relay/retry-policy.ts"
import type { LoggedRecord } from "../fake-kafka.ts"
import type { SimulationResult } from "./world.ts"

export interface Violation {
  readonly invariant: string
  readonly detail: string
}

const mainDeliveries = (result: SimulationResult) => result.kafka.log.filter((r) => r.topic !== result.scenario.config.dlqTopic)

/** Every event ends SENT, or DEAD with a reason, or is still pending with a retry to come. */
const everyEventSettles = (result: SimulationResult): Array<Violation> =>
  result.rows
    .filter(
      (r) => !(r.status === "SENT" || (r.status === "DEAD" && r.deadReason !== null) || (r.status === "FAILED" && r.lockedBy === null)),
    )
    .map((r) => ({
      invariant: "every event ends SENT, or DEAD with a reason, or waits for a retry",
      detail: `row ${r.id} (${r.dedupKey}, ${result.kinds.get(r.dedupKey)}) is ${r.status}, attempts ${r.attempts}, leased by ${r.lockedBy}, dead reason ${r.deadReason}`,
    }))

/** SENT means the broker acknowledged that very record at the recorded partition and offset. */
const sentMeansAcknowledged = (result: SimulationResult): Array<Violation> =>
  result.rows
    .filter((r) => r.status === "SENT")
    .filter(
      (r) =>
        !result.kafka.log.some(
          (l) =>
            l.acknowledged &&
            l.eventId === r.eventId &&
            l.topic === r.delivery?.topic &&
            l.partition === r.delivery.partition &&
            String(l.offset) === r.delivery.offset,
        ),
    )
    .map((r) => ({
      invariant: "nothing is SENT that the broker did not acknowledge",
      detail: `row ${r.id} SENT at ${JSON.stringify(r.delivery)} but no acknowledged record of event ${r.eventId} is there`,
    }))

/**
 * Per key: first deliveries to the event topics come in id order; and a dead event's first
 * appearance anywhere (its own topic, or the DLQ) comes before any later event of its key.
 */
const keysStayInOrder = (result: SimulationResult): Array<Violation> => {
  const violations: Array<Violation> = []
  const firstMain = new Map<string, number>()
  const firstAnywhere = new Map<string, number>()
  result.kafka.log.forEach((l, index) => {
    if (!firstAnywhere.has(l.eventId)) firstAnywhere.set(l.eventId, index)
    if (l.topic !== result.scenario.config.dlqTopic && !firstMain.has(l.eventId)) firstMain.set(l.eventId, index)
  })
  const keys = new Map<string, Array<(typeof result.rows)[number]>>()
  for (const r of result.rows) {
    if (r.aggregateKey === null) continue
    const list = keys.get(r.aggregateKey) ?? []
    list.push(r)
    keys.set(r.aggregateKey, list)
  }
  for (const [key, rows] of keys) {
    const delivered = rows.filter((r) => firstMain.has(r.eventId)).sort((a, b) => firstMain.get(a.eventId)! - firstMain.get(b.eventId)!)
    for (let i = 1; i < delivered.length; i++) {
      if (delivered[i]!.id < delivered[i - 1]!.id) {
        violations.push({
          invariant: "for each key, first deliveries are in id order",
          detail: `key ${key}: row ${delivered[i]!.id} first reached Kafka after row ${delivered[i - 1]!.id}, which is later`,
        })
      }
    }
    for (const dead of rows.filter((r) => r.status === "DEAD" && firstAnywhere.has(r.eventId))) {
      const deadAt = firstAnywhere.get(dead.eventId)!
      for (const later of rows.filter((r) => r.id > dead.id && firstMain.has(r.eventId))) {
        if (firstMain.get(later.eventId)! < deadAt) {
          violations.push({
            invariant: "a dead event holds its key back until it is dead-lettered",
            detail: `key ${key}: row ${later.id} reached Kafka before row ${dead.id} (${dead.deadReason}) appeared anywhere`,
          })
        }
      }
    }
  }
  return violations
}

/**
 * A second delivery of an event needs a cause: its lease was taken over (the store counts
 * every takeover), or an earlier send of it landed without an acknowledgement.
 */
const duplicatesAreExplained = (result: SimulationResult): Array<Violation> => {
  const violations: Array<Violation> = []
  const deliveries = new Map<string, Array<LoggedRecord>>()
  for (const l of mainDeliveries(result)) {
    const list = deliveries.get(l.eventId) ?? []
    list.push(l)
    deliveries.set(l.eventId, list)
  }
  for (const row of result.rows) {
    const sends = deliveries.get(row.eventId) ?? []
    if (sends.length <= 1) continue
    const takeovers = result.db.journal.takeovers.filter((t) => t.id === row.id).length
    const unacknowledged = sends.filter((s) => !s.acknowledged).length
    if (sends.length - 1 > takeovers + unacknowledged) {
      violations.push({
        invariant: "duplicates occur only after a lease takeover or a lost acknowledgement, and each is counted",
        detail: `row ${row.id} was delivered ${sends.length} times with ${takeovers} takeovers and ${unacknowledged} unacknowledged sends`,
      })
    }
  }
  return violations
}

/** Every FAILED mark scheduled its retry within the backoff schedule's bounds. */
const retryDelaysInBounds = (result: SimulationResult): Array<Violation> =>
  result.db.journal.retries
    .map((r) => ({ r, bounds: retryDelayBounds(result.scenario.config, r.retry) }))
    .filter(({ r, bounds }) => r.delayMs < bounds.min || r.delayMs > bounds.max)
    .map(({ r, bounds }) => ({
      invariant: "every retry delay stays within the schedule's bounds",
      detail: `row ${r.id}, retry ${r.retry}: ${r.delayMs} ms, outside [${bounds.min}, ${bounds.max}]`,
    }))

/** After a graceful stop the instance holds no lease. */
const gracefulStopLeavesNoLease = (result: SimulationResult): Array<Violation> => {
  const graceful = new Set(result.instances.filter((i) => i.stop === "graceful").map((i) => i.name))
  const violations: Array<Violation> = result.rows
    .filter((r) => r.lockedBy !== null && graceful.has(r.lockedBy) && (r.status === "NEW" || r.status === "FAILED"))
    .map((r) => ({
      invariant: "nothing stays leased after a graceful stop",
      detail: `row ${r.id} is still leased by ${r.lockedBy}, which stopped gracefully`,
    }))
  if (!result.allStopped)
    violations.push({ invariant: "a graceful stop ends", detail: "an instance's fiber was still running 30 s after its stop" })
  return violations
}

export const checkInvariants = (result: SimulationResult): ReadonlyArray<Violation> => [
  ...everyEventSettles(result),
  ...sentMeansAcknowledged(result),
  ...keysStayInOrder(result),
  ...duplicatesAreExplained(result),
  ...retryDelaysInBounds(result),
  ...gracefulStopLeavesNoLease(result),
]
