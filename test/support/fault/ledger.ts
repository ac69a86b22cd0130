/**
 * Counts every event after a fault: the table says where each row ended, Kafka says what
 * arrived. An event is accounted for when its row is SENT and it is on its topic, or its
 * row is DEAD with a reason and it is on the dead-letter topic. Duplicates are allowed
 * (at least once) but counted; per-key order is judged on each event's first arrival.
 */
import { expect } from "vitest"
import type { EventSpec } from "./event-writer.ts"
import type { OutboxRow } from "./fault-db.ts"
import type { KafkaMessage } from "./kafka-readback.ts"

export interface Ledger {
  readonly events: number
  readonly sent: number
  readonly dead: number
  /** Writes the writer saw commit that are not in the table. */
  readonly lostWrites: ReadonlyArray<string>
  /** Rows neither SENT nor DEAD (NEW, FAILED): stuck. */
  readonly notSettled: ReadonlyArray<string>
  readonly deadWithoutReason: ReadonlyArray<string>
  /** SENT rows whose event is not on its topic. */
  readonly sentButMissing: ReadonlyArray<string>
  /** SENT rows found on another topic than TOPIC_MAP says. */
  readonly wrongTopic: ReadonlyArray<string>
  /** DEAD rows without a dead letter carrying their reason. */
  readonly deadButNoDeadLetter: ReadonlyArray<string>
  /** Messages whose dedup_key is no row of the table. */
  readonly unknownOnKafka: ReadonlyArray<string>
  /** Extra copies on the event topics beyond the first (at least once). */
  readonly duplicates: number
  readonly duplicatedEvents: number
  /** Ids of the rows that reached Kafka more than once (for diagnosis). */
  readonly duplicatedIds: ReadonlyArray<string>
  readonly deadLetterDuplicates: number
  /** "topic/key: id A arrived before id B" for each key whose first arrivals are out of id order. */
  readonly orderViolations: ReadonlyArray<string>
  readonly orderedKeys: number
}

/**
 * DEAD rows that need not have a letter carrying their reason: the DLQ refused even the trimmed
 * letter, PostgreSQL refused the row's mark (its letter, if any, carries the original reason),
 * or the row was settled by migration 7 before the relay saw it.
 */
const LETTERLESS_REASONS = new Set(["dlq_rejected", "unmarkable", "out_of_limits"])

const describeRow = (r: OutboxRow) =>
  `${r.id} ${r.dedup_key} ${r.event_type} key=${r.aggregate_key} ${r.status} attempts=${r.attempts} locked_by=${r.locked_by} last_error=${r.last_error}`

export const account = (input: {
  readonly written: ReadonlyArray<EventSpec>
  readonly rows: ReadonlyArray<OutboxRow>
  readonly messages: ReadonlyArray<KafkaMessage>
  readonly topicMap: Readonly<Record<string, string>>
  readonly dlqTopic: string
}): Ledger => {
  const { rows, messages, topicMap, dlqTopic } = input
  const byKey = new Map(rows.map((r) => [r.dedup_key, r]))
  const onTopics = messages.filter((m) => m.topic !== dlqTopic)
  const deadLetters = messages.filter((m) => m.topic === dlqTopic)

  const copies = new Map<string, Array<KafkaMessage>>()
  for (const m of onTopics) {
    const k = m.headers.dedup_key ?? "(no dedup_key header)"
    copies.set(k, [...(copies.get(k) ?? []), m])
  }
  const letters = new Map<string, Array<KafkaMessage>>()
  for (const m of deadLetters) {
    const k = m.headers.dedup_key ?? "(no dedup_key header)"
    letters.set(k, [...(letters.get(k) ?? []), m])
  }

  const sentButMissing: Array<string> = []
  const wrongTopic: Array<string> = []
  const deadButNoDeadLetter: Array<string> = []
  for (const r of rows) {
    if (r.status === "SENT") {
      const found = copies.get(r.dedup_key) ?? []
      if (found.length === 0) sentButMissing.push(describeRow(r))
      else if (found.some((m) => m.topic !== topicMap[r.event_type])) wrongTopic.push(`${describeRow(r)} on ${found.map((m) => m.topic)}`)
    } else if (r.status === "DEAD" && !LETTERLESS_REASONS.has(r.dead_reason ?? "")) {
      const found = letters.get(r.dedup_key) ?? []
      if (!found.some((m) => m.headers["dlq.reason"] === r.dead_reason)) deadButNoDeadLetter.push(describeRow(r))
    }
  }

  let duplicates = 0
  const duplicatedIds: Array<string> = []
  for (const [dedupKey, list] of copies) {
    if (list.length > 1) {
      duplicates += list.length - 1
      duplicatedIds.push(byKey.get(dedupKey)?.id ?? dedupKey)
    }
  }
  let deadLetterDuplicates = 0
  for (const list of letters.values()) deadLetterDuplicates += Math.max(0, list.length - 1)

  // Per-key order: in each partition, the first arrival of each event, in offset order,
  // must follow the ids. Only keyed rows count; a key lives in one partition of a topic.
  const idOf = (m: KafkaMessage) => {
    const row = byKey.get(m.headers.dedup_key ?? "")
    return row === undefined || row.aggregate_key === null ? undefined : { id: BigInt(row.id), key: row.aggregate_key }
  }
  const sorted = [...onTopics].sort((a, b) => a.topic.localeCompare(b.topic) || a.partition - b.partition || a.offset - b.offset)
  const seen = new Set<string>()
  const lastId = new Map<string, bigint>()
  const orderViolations: Array<string> = []
  for (const m of sorted) {
    const dedup = m.headers.dedup_key ?? ""
    if (seen.has(dedup)) continue
    seen.add(dedup)
    const row = idOf(m)
    if (row === undefined) continue
    const slot = `${m.topic}/${row.key}`
    const last = lastId.get(slot)
    if (last !== undefined && row.id < last) orderViolations.push(`${slot}: id ${row.id} arrived after id ${last} (offset ${m.offset})`)
    if (last === undefined || row.id > last) lastId.set(slot, row.id)
  }

  return {
    events: rows.length,
    sent: rows.filter((r) => r.status === "SENT").length,
    dead: rows.filter((r) => r.status === "DEAD").length,
    lostWrites: input.written.filter((e) => !byKey.has(e.dedupKey)).map((e) => e.dedupKey),
    notSettled: rows.filter((r) => r.status !== "SENT" && r.status !== "DEAD").map(describeRow),
    deadWithoutReason: rows.filter((r) => r.status === "DEAD" && (r.dead_reason === null || r.dead_reason === "")).map(describeRow),
    sentButMissing,
    wrongTopic,
    deadButNoDeadLetter,
    unknownOnKafka: [...new Set(messages.map((m) => m.headers.dedup_key ?? "(no dedup_key header)"))].filter((k) => !byKey.has(k)),
    duplicates,
    duplicatedEvents: duplicatedIds.length,
    duplicatedIds,
    deadLetterDuplicates,
    orderViolations,
    orderedKeys: lastId.size,
  }
}

/** Nothing lost, nothing stuck, nothing reordered: the promises that hold under every fault. */
export const expectEveryEventAccountedFor = (ledger: Ledger) => {
  expect(ledger.lostWrites, "committed writes missing from the table").toEqual([])
  expect(ledger.notSettled, "rows neither SENT nor DEAD").toEqual([])
  expect(ledger.deadWithoutReason, "DEAD rows without dead_reason").toEqual([])
  expect(ledger.sentButMissing, "SENT rows not on Kafka").toEqual([])
  expect(ledger.wrongTopic, "events on the wrong topic").toEqual([])
  expect(ledger.deadButNoDeadLetter, "DEAD rows without their dead letter").toEqual([])
  expect(ledger.unknownOnKafka, "messages of no row").toEqual([])
  expect(ledger.orderViolations, "per-key order broken").toEqual([])
  expect(ledger.orderedKeys).toBeGreaterThan(0)
}

export interface ScenarioReport {
  readonly scenario: string
  readonly ledger: Ledger
  readonly recoverySeconds?: number
  readonly wallSeconds: number
  readonly extra?: Readonly<Record<string, string | number>>
}

export const printReport = (r: ScenarioReport) => {
  const parts = [
    `events=${r.ledger.events}`,
    `sent=${r.ledger.sent}`,
    `dead=${r.ledger.dead}`,
    `duplicates=${r.ledger.duplicates} (${r.ledger.duplicatedEvents} events)`,
    `dlq_duplicates=${r.ledger.deadLetterDuplicates}`,
    `keys_checked=${r.ledger.orderedKeys}`,
    r.recoverySeconds === undefined ? undefined : `recovered_in=${r.recoverySeconds.toFixed(2)}s`,
    `wall=${r.wallSeconds.toFixed(1)}s`,
    r.ledger.duplicatedIds.length === 0 ? undefined : `duplicated_ids=${compactIds(r.ledger.duplicatedIds)}`,
    ...Object.entries(r.extra ?? {}).map(([k, v]) => `${k}=${v}`),
  ].filter((p) => p !== undefined)
  console.log(`[fault] ${r.scenario}: ${parts.join(" ")}`)
}

/** "1-3,7,9-10" */
const compactIds = (ids: ReadonlyArray<string>): string => {
  const sorted = [...ids].map(Number).sort((a, b) => a - b)
  const ranges: Array<string> = []
  for (let i = 0; i < sorted.length; ) {
    let j = i
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j]! + 1) j++
    ranges.push(i === j ? `${sorted[i]}` : `${sorted[i]}-${sorted[j]}`)
    i = j + 1
  }
  return ranges.join(",")
}
