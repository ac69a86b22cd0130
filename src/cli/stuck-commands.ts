/**
 * `outbox-relay stuck` and `outbox-relay unstick`: see what each key waits behind, and free rows
 * leased or scheduled beyond what the relay's settings write. Read DATABASE_URL, and LEASE_MS,
 * BACKOFF_MAX_MS and KEY_STALL_MS as the relay has them (their defaults when unset).
 */
import { userInfo } from "node:os"
import { Console, Effect, Layer, Option, Result } from "effect"
import { Command, Flag } from "effect/cli"
import { type ConfigProblem, InvalidConfig, settings } from "../config/config.ts"
import { rowIdProblem } from "../outbox/row-id.ts"
import { type PendingRow, StuckRows, stuckBounds } from "../outbox/stuck-rows.ts"
import { CommandFailed, reportFailures } from "./cli-failure.ts"
import { databaseOnlyLayer } from "./database-only.ts"

/** The three settings the bounds come from, read like the relay reads them. */
const boundsFromEnv = Effect.suspend(() => {
  const problems: Array<ConfigProblem> = []
  const read = (setting: (typeof settings)["leaseMs" | "backoffMaxMs" | "keyStallMs"]) => {
    const value = setting.read(process.env[setting.name])
    if (Result.isSuccess(value)) return value.success
    problems.push({ variable: setting.name, message: value.failure })
    return 0
  }
  const bounds = stuckBounds({
    leaseMs: read(settings.leaseMs),
    backoffMaxMs: read(settings.backoffMaxMs),
    keyStallMs: read(settings.keyStallMs),
  })
  return problems.length > 0 ? Effect.fail(new InvalidConfig({ problems })) : Effect.succeed(bounds)
})

const StuckLive = Layer.unwrap(Effect.map(boundsFromEnv, StuckRows.layerWith)).pipe(Layer.provide(databaseOnlyLayer))

const HEADER =
  "id\tcreated_at\tage_s\tstatus\tevent_type\taggregate_key\tattempts\tnext_attempt_at\tlocked_by\tlocked_until\trows_behind\tflags"

const printRows = (rows: ReadonlyArray<PendingRow>, json: boolean) =>
  Effect.forEach(
    rows,
    (r) =>
      Console.log(
        json
          ? JSON.stringify(r)
          : [
              r.id,
              r.created_at,
              Math.round(r.age_seconds),
              r.status,
              r.event_type,
              r.aggregate_key ?? "-",
              r.attempts,
              r.next_attempt_at,
              r.locked_by ?? "-",
              r.locked_until ?? "-",
              r.rows_behind,
              r.flags.join(",") || "-",
            ].join("\t"),
      ),
    { discard: true },
  )

export const stuckCommand = Command.make(
  "stuck",
  {
    limit: Flag.Int("limit").pipe(Flag.withDescription("At most this many rows per listing"), Flag.withDefault(20)),
    json: Flag.Boolean("json").pipe(Flag.withDescription("Print JSON lines instead of tables"), Flag.withDefault(false)),
  },
  (f) =>
    reportFailures(
      Effect.gen(function* () {
        const listing = yield* (yield* StuckRows).list(Math.max(1, f.limit))
        if (f.json) {
          yield* Effect.forEach(
            [
              ...listing.oldest_per_key.map((r) => ({ listing: "oldest_per_key", ...r })),
              ...listing.beyond_settings.map((r) => ({ listing: "beyond_settings", ...r })),
            ],
            (r) => Console.log(JSON.stringify(r)),
            { discard: true },
          )
          return
        }
        yield* Console.log(`Oldest pending row of each key (stalled after ${listing.bounds.key_stall_ms} ms):`)
        yield* Console.log(HEADER)
        yield* printRows(listing.oldest_per_key, false)
        yield* Console.log(
          `\nRows leased past now + ${listing.bounds.lease_beyond_ms} ms or scheduled past now + ${listing.bounds.retry_beyond_ms} ms ` +
            "(beyond LEASE_MS / BACKOFF_MAX_MS plus a minute; free them with `outbox-relay unstick`):",
        )
        yield* Console.log(HEADER)
        yield* printRows(listing.beyond_settings, false)
      }).pipe(Effect.provide(StuckLive)),
    ),
).pipe(
  Command.withDescription(
    "List the oldest pending row of each key and the rows leased or scheduled beyond the relay's settings. Reads DATABASE_URL, LEASE_MS, BACKOFF_MAX_MS, KEY_STALL_MS.",
  ),
)

export const unstickCommand = Command.make(
  "unstick",
  {
    id: Flag.String("id").pipe(
      Flag.withDescription("Pending row to free (repeatable): freed when beyond the settings or not leased now"),
      Flag.atLeast(0),
    ),
    all: Flag.Boolean("all").pipe(Flag.withDescription("Free every row beyond the settings"), Flag.withDefault(false)),
    dryRun: Flag.Boolean("dry-run").pipe(Flag.withDescription("Show what would be freed, change nothing"), Flag.withDefault(false)),
    actor: Flag.String("actor").pipe(Flag.withDescription("Who is freeing, for the audit line (default: the OS user)"), Flag.optional),
    json: Flag.Boolean("json").pipe(Flag.withDescription("Print JSON lines instead of a table"), Flag.withDefault(false)),
  },
  (f) =>
    reportFailures(
      Effect.gen(function* () {
        const problem = f.id.map(rowIdProblem).find((p) => p !== undefined)
        if (problem !== undefined) return yield* new CommandFailed({ message: `--id ${problem}`, exitCode: 2 })
        if (f.id.length === 0 && !f.all) {
          return yield* new CommandFailed({
            message: "Name the rows to free (--id), or pass --all for every row beyond the settings.",
            exitCode: 2,
          })
        }
        const result = yield* Effect.gen(function* () {
          const stuck = yield* StuckRows
          return yield* stuck.free(
            { ids: f.id, all: f.all },
            { actor: Option.getOrUndefined(f.actor) ?? userInfo().username, origin: "cli", dryRun: f.dryRun },
          )
        }).pipe(Effect.provide(StuckLive))
        if (!f.json) yield* Console.log(HEADER)
        yield* printRows(result.freed, f.json)
        if (result.notFreed.length > 0) {
          yield* Console.log(`Not freed (not pending, or leased within LEASE_MS by a live claim): ${result.notFreed.join(", ")}`)
        }
        yield* Console.log(
          result.dryRun
            ? `Dry run: ${result.freed.length} row(s) would be freed.`
            : `Freed ${result.freed.length} row(s): claimable now, lease cleared${result.auditId ? ` (audit #${result.auditId})` : ""}.`,
        )
      }),
    ),
).pipe(
  Command.withDescription(
    "Free pending rows leased or scheduled beyond the relay's settings (next_attempt_at = now, lease cleared), with an audit line in outbox_replay_audit. Reads DATABASE_URL, LEASE_MS, BACKOFF_MAX_MS.",
  ),
)
