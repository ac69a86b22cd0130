/**
 * What the backlog says an operator must act on, in the operator's terms: which setting or
 * command to look at. The same words go to the WARN lines and to /readyz, so the log and the
 * probe never disagree about why the relay is degraded.
 */
import type { RelayConfigShape } from "../config/config.ts"
import { deadLetterTopicHint } from "../kafka/startup-check.ts"
import type { Backlog } from "../outbox/backlog.ts"

export interface BacklogProblem {
  readonly kind: "dead_letters_waiting" | "stuck_rows"
  readonly count: number
  /** What is wrong, the same words while it lasts (the log line's message: easy to search and alert on). */
  readonly title: string
  /** What it does and what to do about it. */
  readonly action: string
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
          title: `dead letters wait for the dead-letter topic "${config.dlqTopic}" (DLQ_TOPIC): missing or unreachable`,
          action: `Their rows stay FAILED and hold their keys; ${deadLetterTopicHint(config)}.`,
        },
      ]
    : []),
  ...(backlog.stuckRows > 0
    ? [
        {
          kind: "stuck_rows" as const,
          count: backlog.stuckRows,
          title: "pending rows are leased or scheduled beyond what LEASE_MS and BACKOFF_MAX_MS allow",
          action:
            "They hold their keys and no retry clears them: list them with `outbox-relay stuck` (GET /admin/stuck), " +
            "free them with `outbox-relay unstick` (POST /admin/stuck/free).",
        },
      ]
    : []),
]

/** One sentence with the count, for /readyz. */
export const describeProblem = (p: BacklogProblem): string => `${p.count} ${p.title}. ${p.action}`

/** The `degraded` list of /readyz and /admin/status, from the backlog's last read (empty before the first). */
export const degradedReport = (latest: Backlog | undefined, config: Settings) =>
  latest === undefined ? [] : backlogProblems(latest, config).map((p) => ({ reason: p.kind, count: p.count, message: describeProblem(p) }))
