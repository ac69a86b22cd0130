/**
 * The relay's metrics, named as operators will query them. Gauges fed from the database
 * are refreshed on an interval elsewhere; everything here is updated on the hot path.
 */
import { Metric } from "effect"

export const publishTotal = Metric.counter("outbox_publish_total", {
  description: "Events by outcome of a publish attempt: sent, failed (will retry), dead (dead-lettered)",
  incremental: true,
})
export const publishSent = Metric.withAttributes(publishTotal, { status: "sent" })
export const publishFailed = Metric.withAttributes(publishTotal, { status: "failed" })
export const publishDead = Metric.withAttributes(publishTotal, { status: "dead" })

export const deadLetters = Metric.counter("outbox_dead_letters_total", {
  description: "Events published to the dead-letter topic",
  incremental: true,
})

export const leaseTakeovers = Metric.counter("outbox_lease_takeovers_total", {
  description: "Rows claimed after another instance's lease expired (a possible duplicate on Kafka)",
  incremental: true,
})

export const unmarkableRows = Metric.counter("outbox_unmarkable_total", {
  description: "Rows whose mark PostgreSQL refused (a data error), settled DEAD with reason unmarkable",
  incremental: true,
})

export const leasesLost = Metric.counter("outbox_lease_lost_total", {
  description: "Rows this instance published but could not mark, because another instance had taken them over",
  incremental: true,
})

export const batchSize = Metric.histogram("outbox_batch_size", {
  description: "Rows per claimed batch",
  boundaries: Metric.exponentialBoundaries({ start: 1, factor: 2, count: 11 }),
})

export const publishDurationSeconds = Metric.histogram("outbox_publish_duration_seconds", {
  description: "Time to publish one batch to Kafka",
  boundaries: Metric.exponentialBoundaries({ start: 0.001, factor: 2, count: 14 }),
})

export const endToEndSeconds = Metric.histogram("outbox_event_age_at_send_seconds", {
  description: "Time from the row's created_at to Kafka's acknowledgement",
  boundaries: Metric.exponentialBoundaries({ start: 0.005, factor: 2, count: 16 }),
})

// Backlog gauges, read from the database by the refresher (backlog-gauges.ts), not per batch.
export const newCount = Metric.gauge("outbox_new_count", { description: "Rows with status NEW (not yet published)" })
export const failedCount = Metric.gauge("outbox_failed_count", { description: "Rows with status FAILED (waiting for their next attempt)" })
export const relayLagSeconds = Metric.gauge("outbox_relay_lag_seconds", {
  description: "Age of the oldest row due for publishing (NEW, or FAILED whose retry time has come); 0 when none",
})
export const oldestPendingAgeSeconds = Metric.gauge("outbox_oldest_pending_age_seconds", {
  description:
    "Age of the oldest pending row (NEW or FAILED), due or not: the longest any key has waited on its first unsent event; 0 when none",
})
export const stalledKeys = Metric.gauge("outbox_stalled_keys", {
  description: "Keys (and unkeyed rows) whose oldest pending row is older than KEY_STALL_MS",
})
export const deadLetterWaiting = Metric.gauge("outbox_dead_letter_waiting", {
  description: "Rows that are due to die but whose dead letter waits for the dead-letter topic (FAILED with a dead_reason)",
})
export const stuckRows = Metric.gauge("outbox_stuck_rows", {
  description:
    "Pending rows leased or scheduled beyond anything the relay's settings write (locked_until past LEASE_MS, next_attempt_at past BACKOFF_MAX_MS, plus a minute): they hold their keys until freed",
})

// A failed send is not atomic: the partitions Kafka had already appended keep their records.
export const resends = Metric.counter("outbox_resends_total", {
  description:
    "Records in a Kafka send that failed after it was handed to the producer (some may have landed); each is sent again, as a record or a dead letter: possible duplicates no lease takeover explains",
  incremental: true,
})
