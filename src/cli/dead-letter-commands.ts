/** `outbox-relay dlq list` and `outbox-relay replay`: look at dead letters, and requeue events once the cause is fixed. */
import { userInfo } from "node:os"
import { Console, Effect, Layer, Option } from "effect"
import { Command, Flag } from "effect/cli"
import { DeadReason } from "../domain/errors.ts"
import { type DeadLetterRow, DeadLetterStore, type EventSelection } from "../outbox/dead-letter-store.ts"
import { rowIdProblem } from "../outbox/row-id.ts"
import { CommandFailed, reportFailures } from "./cli-failure.ts"
import { databaseOnlyLayer } from "./database-only.ts"

const StoreLive = DeadLetterStore.layer.pipe(Layer.provide(databaseOnlyLayer))

const ISO_DATE = /^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$/
const isoTime = (name: string) =>
  Flag.String(name).pipe(
    Flag.filter(
      (s) => ISO_DATE.test(s),
      (s) => `--${name} must be an ISO 8601 date or time, got "${s}"`,
    ),
    Flag.optional,
  )

const filters = {
  eventType: Flag.String("event-type").pipe(Flag.withDescription("Only this event_type"), Flag.optional),
  since: isoTime("since").pipe(Flag.withDescription("Created at or after (ISO 8601)")),
  until: isoTime("until").pipe(Flag.withDescription("Created before (ISO 8601)")),
  json: Flag.Boolean("json").pipe(Flag.withDescription("Print JSON lines instead of a table"), Flag.withDefault(false)),
}

const opt = <A>(o: Option.Option<A>): A | undefined => Option.getOrUndefined(o)

const printRows = (rows: ReadonlyArray<DeadLetterRow>, json: boolean) =>
  Effect.forEach(
    rows,
    (r) =>
      Console.log(
        json
          ? JSON.stringify(r)
          : `${r.id}\t${r.created_at}\t${r.status}\t${r.event_type}\t${r.dedup_key}\t${r.dead_reason ?? "-"}\t${r.attempts}\t${r.last_error ?? ""}`,
      ),
    { discard: true },
  )

const listCommand = Command.make(
  "list",
  {
    ...filters,
    reason: Flag.Literals("reason", DeadReason.literals).pipe(Flag.withDescription("Only dead letters with this reason"), Flag.optional),
    limit: Flag.Int("limit").pipe(Flag.withDescription("At most this many rows"), Flag.withDefault(100)),
  },
  (f) =>
    reportFailures(
      Effect.gen(function* () {
        const store = yield* DeadLetterStore
        const rows = yield* store.list({
          eventType: opt(f.eventType),
          since: opt(f.since),
          until: opt(f.until),
          reason: opt(f.reason),
          limit: f.limit,
        })
        if (!f.json) yield* Console.log("id\tcreated_at\tstatus\tevent_type\tdedup_key\treason\tattempts\tlast_error")
        yield* printRows(rows, f.json)
      }).pipe(Effect.provide(StoreLive)),
    ),
).pipe(Command.withDescription("List dead-lettered events (status DEAD), oldest first. Reads DATABASE_URL."))

export const dlqCommand = Command.make("dlq").pipe(
  Command.withDescription("Inspect the dead letters kept in the outbox table."),
  Command.withSubcommands([listCommand]),
)

/** An id out of the table's range is a typing error: say so before reading any configuration. */
const refuseBadIds = (ids: ReadonlyArray<string>) => {
  const problem = ids.map(rowIdProblem).find((p) => p !== undefined)
  return problem === undefined ? Effect.void : Effect.fail(new CommandFailed({ message: `--id ${problem}`, exitCode: 2 }))
}

export const replayCommand = Command.make(
  "replay",
  {
    ...filters,
    id: Flag.String("id").pipe(Flag.withDescription("Outbox row id (repeatable)"), Flag.atLeast(0)),
    dedupKey: Flag.String("dedup-key").pipe(Flag.withDescription("dedup_key (repeatable)"), Flag.atLeast(0)),
    status: Flag.Literals("status", ["DEAD", "FAILED"]).pipe(Flag.withDescription("Which rows to requeue"), Flag.withDefault("DEAD")),
    all: Flag.Boolean("all").pipe(
      Flag.withDescription("Requeue every row of that status (no other filter needed)"),
      Flag.withDefault(false),
    ),
    dryRun: Flag.Boolean("dry-run").pipe(Flag.withDescription("Show what would be requeued, change nothing"), Flag.withDefault(false)),
    actor: Flag.String("actor").pipe(Flag.withDescription("Who is replaying, for the audit line (default: the OS user)"), Flag.optional),
  },
  (f) =>
    reportFailures(
      Effect.gen(function* () {
        const selection: EventSelection = {
          ids: f.id,
          dedupKeys: f.dedupKey,
          eventType: opt(f.eventType),
          since: opt(f.since),
          until: opt(f.until),
          status: f.status,
        }
        const narrowed = f.id.length > 0 || f.dedupKey.length > 0 || selection.eventType || selection.since || selection.until
        if (!narrowed && !f.all) {
          return yield* new CommandFailed({
            message: "Name what to replay (--id, --dedup-key, --event-type, --since/--until), or pass --all.",
            exitCode: 2,
          })
        }
        const store = yield* DeadLetterStore
        const result = yield* store.replay(selection, { actor: opt(f.actor) ?? userInfo().username, origin: "cli", dryRun: f.dryRun })
        yield* printRows(result.events, f.json)
        yield* Console.log(
          result.dryRun
            ? `Dry run: ${result.events.length} ${f.status} event(s) would be requeued.`
            : `Requeued ${result.events.length} ${f.status} event(s) as NEW${result.auditId ? ` (audit #${result.auditId})` : ""}.`,
        )
      }).pipe(Effect.provide(StoreLive), (replay) => Effect.andThen(refuseBadIds(f.id), replay)),
    ),
).pipe(
  Command.withDescription(
    "Requeue DEAD (or FAILED) events: resets attempts and retry time, and records who/when/what in outbox_replay_audit. Reads DATABASE_URL.",
  ),
)
