/**
 * What must hold after every simulated run, whatever the faults. Each check returns the
 * violations it found, described well enough to start debugging from the seed.
 */
import type { DeadReason } from "../../../src/domain/errors.ts"
import { retryDelayBounds } from "../backoff-bounds.ts"
import type { LoggedRecord, SendCounts } from "../fake-kafka.ts"
import type { FakeRow } from "../fake-outbox-store.ts"
import type { EventKind } from "./scenario.ts"
import type { SimulationResult } from "./world.ts"

export interface Violation {
  readonly invariant: string
  readonly detail: string
}

const mainDeliveries = (result: SimulationResult) => result.kafka.log.filter((r) => r.topic !== result.scenario.config.dlqTopic)

/** Once the faults heal, every event ends SENT, or DEAD with a reason. */
const everyEventSettles = (result: SimulationResult): Array<Violation> =>
  result.rows
    .filter((r) => !(r.status === "SENT" || (r.status === "DEAD" && r.deadReason !== null)))
    .map((r) => ({
      invariant: "every event ends SENT, or DEAD with a reason",
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
 * A record that landed after its send had timed out is left out: the relay had given up on
 * it and gone on, and no relay can order what the broker appends after it stopped waiting
 * (the step checker still proves every send was made in order).
 */
const keysStayInOrder = (result: SimulationResult): Array<Violation> => {
  const violations: Array<Violation> = []
  const firstMain = new Map<string, number>()
  const firstAnywhere = new Map<string, number>()
  result.kafka.log.forEach((l, index) => {
    if (l.late) return
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

const NO_SENDS: SendCounts = { main: 0, mainFailed: 0, deadLetter: 0, deadLetterFailed: 0 }

/** A DLQ limit at or above this takes every trimmed letter the scenario makes (they are a few hundred bytes). */
const TRIMMED_LETTER_FITS = 700

/** The dead reasons each class of event may end with (besides attempts_exhausted, which any may). */
const DEAD_AS: Readonly<Record<EventKind, ReadonlyArray<DeadReason>>> = {
  normal: [],
  missing_topic: [],
  unknown_type: ["unknown_event_type", "dlq_rejected"],
  oversize: ["message_too_large", "dlq_rejected"],
  poison: ["invalid_record", "dlq_rejected"],
  poison_big_headers: ["invalid_record", "dlq_rejected"],
  huge_event_type: ["out_of_limits", "unmarkable"],
  attempts_at_limit: ["out_of_limits", "unmarkable", "attempts_exhausted"],
}

/** Rows plain SQL put there before the row limits: what they end as is all that is asked of them. */
const LEGACY: ReadonlyArray<EventKind> = ["huge_event_type", "attempts_at_limit"]

/**
 * What each class of event must end as. Normal events and those of a missing topic: SENT, or
 * DEAD `attempts_exhausted` only after MAX_ATTEMPTS sends of theirs failed. Events no retry can
 * fix: DEAD with their own reason, on the attempt that found it (attempts: the failed ones
 * before, plus that one). `attempts_exhausted` is counted right: at least MAX_ATTEMPTS, and
 * more only by dead-letter sends that failed.
 */
const eventsEndAsTheirClass = (result: SimulationResult): Array<Violation> => {
  const { maxAttempts } = result.scenario.config
  const violations: Array<Violation> = []
  const failedMarks = new Map<number, number>()
  for (const r of result.db.journal.retries) failedMarks.set(r.id, (failedMarks.get(r.id) ?? 0) + 1)
  const fail = (row: FakeRow, kind: EventKind | undefined, why: string) =>
    violations.push({
      invariant: "each class of event ends as it must",
      detail: `row ${row.id} (${kind}) is ${row.status}${row.deadReason === null ? "" : ` ${row.deadReason}`} after ${row.attempts} attempts: ${why}`,
    })
  for (const row of result.rows) {
    const kind = result.kinds.get(row.dedupKey)
    if (kind === undefined || row.status !== "DEAD") continue
    const sends = result.kafka.sends.get(row.eventId) ?? NO_SENDS
    if (LEGACY.includes(kind)) {
      if (row.deadReason === null || !DEAD_AS[kind].includes(row.deadReason)) fail(row, kind, `a ${kind} row may not end so`)
      else if (result.scenario.constraints !== (row.deadReason === "out_of_limits")) {
        fail(
          row,
          kind,
          `out_of_limits is the migration's settling, and the constraints ${result.scenario.constraints ? "exist" : "do not exist"}`,
        )
      }
      continue
    }
    // A letter the DLQ refused keeps the row as it was: the reason it died for is in last_error.
    const exhausted =
      row.deadReason === "attempts_exhausted" ||
      (row.deadReason === "dlq_rejected" && row.lastError?.startsWith("attempts_exhausted") === true)
    if (exhausted) {
      if (row.attempts < maxAttempts) fail(row, kind, `MAX_ATTEMPTS is ${maxAttempts}`)
      else if (row.attempts > maxAttempts + sends.deadLetterFailed) {
        fail(row, kind, `MAX_ATTEMPTS is ${maxAttempts}, and only ${sends.deadLetterFailed} of its dead-letter sends failed`)
      }
      if (sends.mainFailed < maxAttempts) fail(row, kind, `only ${sends.mainFailed} of its sends failed (MAX_ATTEMPTS ${maxAttempts})`)
    } else if (row.deadReason === null || !DEAD_AS[kind].includes(row.deadReason)) {
      fail(row, kind, `a ${kind} event may not die of that`)
    } else if (row.deadReason === "dlq_rejected" && result.scenario.dlqMaxRecordBytes >= TRIMMED_LETTER_FITS) {
      fail(row, kind, `the DLQ takes ${result.scenario.dlqMaxRecordBytes} bytes, room for its trimmed letter`)
    } else if (row.attempts > (failedMarks.get(row.id) ?? 0) + 1) {
      fail(row, kind, `it died on the attempt that found it unsendable, after ${failedMarks.get(row.id) ?? 0} failed ones`)
    }
  }
  return violations
}

/** Attempts grow only by publish attempts: never past MAX_ATTEMPTS plus the dead-letter sends tried. */
const attemptsStayBounded = (result: SimulationResult): Array<Violation> =>
  result.rows
    .filter((r) => !LEGACY.includes(result.kinds.get(r.dedupKey) ?? "normal"))
    .filter((r) => r.attempts > result.scenario.config.maxAttempts + (result.kafka.sends.get(r.eventId) ?? NO_SENDS).deadLetter)
    .map((r) => ({
      invariant: "attempts never exceed MAX_ATTEMPTS + the number of dead-letter tries",
      detail: `row ${r.id} (${r.status}) has ${r.attempts} attempts, MAX_ATTEMPTS ${result.scenario.config.maxAttempts}, ${(result.kafka.sends.get(r.eventId) ?? NO_SENDS).deadLetter} dead-letter tries`,
    }))

/** Not dead-lettered: the DLQ refused the letter, or the row could not even be marked. */
const WITHOUT_LETTER: ReadonlyArray<DeadReason> = ["dlq_rejected", "unmarkable", "out_of_limits"]

/** A DEAD row's dead letter is on the DLQ, acknowledged, with the row's reason. */
const deadRowsAreOnTheDeadLetterTopic = (result: SimulationResult): Array<Violation> => {
  const dlq = result.scenario.config.dlqTopic
  const letters = new Map<string, Set<string>>()
  for (const l of result.kafka.log) {
    if (l.topic !== dlq || !l.acknowledged) continue
    const reasons = letters.get(l.eventId) ?? new Set()
    reasons.add(l.headers["dlq.reason"] ?? "")
    letters.set(l.eventId, reasons)
  }
  return result.rows
    .filter((r) => r.status === "DEAD" && r.deadReason !== null && !WITHOUT_LETTER.includes(r.deadReason))
    .filter((r) => !letters.get(r.eventId)?.has(r.deadReason!))
    .map((r) => ({
      invariant: "every DEAD row has an acknowledged dead letter on the DLQ",
      detail: `row ${r.id} is DEAD ${r.deadReason}; the DLQ has ${letters.has(r.eventId) ? `letters of it with reasons ${[...letters.get(r.eventId)!].join(",")}` : "no acknowledged letter of it"}`,
    }))
}

/**
 * Whether the run's broker was alive throughout, every send finishing within LEASE_MS / 4 (a
 * send the relay gives up on ends at PUBLISH_TIMEOUT_MS), and the database answered: then
 * nothing but a crash may cost a lease.
 */
const aliveAndQuick = (result: SimulationResult): boolean => {
  const { leaseMs, publishTimeoutMs } = result.scenario.config
  const quick = leaseMs / 4
  const broker = result.scenario.broker
  if (broker._tag === "slow" && Math.min(broker.maxMs, publishTimeoutMs) > quick) return false
  return result.scenario.faults.every((f) => {
    switch (f._tag) {
      case "KafkaDown":
      case "DatabaseDown":
      case "DatabaseFlaky":
        return false
      case "SlowSends":
        return Math.min(f.delayMs, publishTimeoutMs) <= quick
      case "KafkaTimeouts":
        return publishTimeoutMs <= quick
      default:
        return true
    }
  })
}

/** A slow but live broker means slower progress, never a takeover: only a crashed instance's rows are taken over. */
const slowBrokerCostsNoTakeover = (result: SimulationResult): Array<Violation> => {
  if (!aliveAndQuick(result)) return []
  const crashed = new Set(result.instances.filter((i) => i.stop === "crashed").map((i) => i.name))
  const bad = result.db.journal.takeovers.filter((t) => !crashed.has(t.from))
  const victims = new Set(result.db.journal.takeovers.filter((t) => crashed.has(t.from)).map((t) => t.from))
  return [
    ...(bad.length === 0
      ? []
      : [
          {
            invariant: "with a live broker answering within LEASE_MS / 4, only a crash costs a takeover",
            detail: `${bad.length} rows taken over from live instances, first: row ${bad[0]!.id} from ${bad[0]!.from} by ${bad[0]!.by} at ${bad[0]!.at} ms`,
          },
        ]),
    ...(victims.size <= result.crashes
      ? []
      : [
          {
            invariant: "takeovers come from at most as many instances as crashed",
            detail: `${victims.size} instances, ${result.crashes} crashes`,
          },
        ]),
  ]
}

/** How long the relay's loop may wait for Kafka before it looks again (its reconnect backoff's cap). */
const KAFKA_RECONNECT_CAP_MS = 10_000

/**
 * Once the faults are healed (and the last restart made), every event settles within a bound
 * the settings give: the crashed holders' leases expire, the loop's reconnect backoff looks
 * for Kafka again, each event uses its attempts at most one backoff and poll apart, and the
 * broker takes every send in its own time.
 */
const settlesInBoundedTime = (result: SimulationResult): Array<Violation> => {
  const c = result.scenario.config
  const broker = result.scenario.broker
  const perSend = broker._tag === "slow" ? broker.maxMs : 0
  const bound =
    c.leaseMs +
    KAFKA_RECONNECT_CAP_MS +
    c.maxAttempts * (c.backoffMaxMs + c.pollIntervalMs) +
    result.rows.length * (perSend + c.busyPollIntervalMs)
  const took = result.settledAt === undefined ? undefined : result.settledAt - result.quietFrom
  return took !== undefined && took <= bound
    ? []
    : [
        {
          invariant: "every event settles within bounded simulated time after the faults heal",
          detail: `${took === undefined ? "not settled" : `settled ${took} ms`} after the faults healed at ${result.quietFrom} ms; the bound is ${bound} ms`,
        },
      ]
}

export const checkInvariants = (result: SimulationResult): ReadonlyArray<Violation> => [
  ...result.steps.violations,
  ...everyEventSettles(result),
  ...sentMeansAcknowledged(result),
  ...keysStayInOrder(result),
  ...duplicatesAreExplained(result),
  ...retryDelaysInBounds(result),
  ...gracefulStopLeavesNoLease(result),
  ...eventsEndAsTheirClass(result),
  ...attemptsStayBounded(result),
  ...deadRowsAreOnTheDeadLetterTopic(result),
  ...slowBrokerCostsNoTakeover(result),
  ...settlesInBoundedTime(result),
]
