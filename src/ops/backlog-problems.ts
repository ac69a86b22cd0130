/**
 * What the backlog says an operator must act on, in the operator's terms: which setting or
 * command to look at. The same sentences go to the WARN lines and to /readyz, so the log and
 * the probe never disagree about why the relay is degraded.
 */
import type { RelayConfigShape } from "../config/config.ts"
import { deadLetterTopicHint } from "../kafka/startup-check.ts"
import type { Backlog } from "../outbox/backlog.ts"

export interface BacklogProblem {
  readonly kind: "dead_letters_waiting" | "stuck_rows"
  readonly count: number
  readonly message: string
}

/** Logged once when a problem that was warned about is gone. */
export const problemCleared: Readonly<Record<BacklogProblem["kind"], string>> = {
  dead_letters_waiting: "no dead letter waits for the dead-letter topic any more",
  stuck_rows: "no pending row is leased or scheduled beyond the settings any more",
}

type Settings = Pick<RelayConfigShape, "dlqTopic" | "kafkaAutoCreateTopics">

export const backlogProblems = (backlog: Backlog, config: Settings): ReadonlyArray<BacklogProblem> => [
  ...(backlog.deadLetterWaiting > 0
    ? [
        {
          kind: "dead_letters_waiting" as const,
          count: backlog.deadLetterWaiting,
          message:
            `${backlog.deadLetterWaiting} dead letter(s) wait for the dead-letter topic "${config.dlqTopic}" (DLQ_TOPIC), missing or unreachable; ` +
            `their rows stay FAILED and hold their keys. ${deadLetterTopicHint(config)}`,
        },
      ]
    : []),
  ...(backlog.stuckRows > 0
    ? [
        {
          kind: "stuck_rows" as const,
          count: backlog.stuckRows,
          message:
            `${backlog.stuckRows} pending row(s) are leased or scheduled beyond what LEASE_MS and BACKOFF_MAX_MS allow, and hold their keys: ` +
            "list them with `outbox-relay stuck` (GET /admin/stuck), free them with `outbox-relay unstick` (POST /admin/stuck/free)",
        },
      ]
    : []),
]
