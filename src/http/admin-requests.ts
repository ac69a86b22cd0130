/**
 * What the admin API accepts, decoded strictly: an unknown field or query parameter is
 * an error (a typo in a replay selector must not widen it to every dead letter), and
 * every problem comes back as one readable sentence.
 */
import { Result, Schema } from "effect"
import { DeadReason } from "../domain/errors.ts"
import type { EventSelection } from "../outbox/dead-letter-store.ts"
import { rowIdProblem } from "../outbox/row-id.ts"
import type { FreeSelection } from "../outbox/stuck-rows.ts"

const MAX_LIST = 1000
const MAX_SELECTORS = 10_000

const ISO_TIME = /^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$/
const IsoTime = Schema.String.check(
  Schema.makeFilter((s) => (ISO_TIME.test(s) && !Number.isNaN(Date.parse(s)) ? undefined : `must be an ISO 8601 date or time, got "${s}"`)),
)
const Text = Schema.String.check(Schema.makeFilter((s) => (s.trim() !== "" ? undefined : "must not be empty")))
const RowId = Schema.Union([Schema.String, Schema.Number]).check(Schema.makeFilter(rowIdProblem))
const LimitParam = Schema.String.check(
  Schema.makeFilter((s) =>
    /^\d+$/.test(s) && Number(s) >= 1 && Number(s) <= MAX_LIST ? undefined : `must be a whole number from 1 to ${MAX_LIST}, got "${s}"`,
  ),
)

const DeadLetterQuery = Schema.Struct({
  event_type: Schema.optionalKey(Text),
  since: Schema.optionalKey(IsoTime),
  until: Schema.optionalKey(IsoTime),
  reason: Schema.optionalKey(DeadReason),
  limit: Schema.optionalKey(LimitParam),
})

const ReplayBody = Schema.Struct({
  ids: Schema.optionalKey(Schema.Array(RowId)),
  dedup_keys: Schema.optionalKey(Schema.Array(Text)),
  event_type: Schema.optionalKey(Text),
  reason: Schema.optionalKey(DeadReason),
  since: Schema.optionalKey(IsoTime),
  until: Schema.optionalKey(IsoTime),
  status: Schema.optionalKey(Schema.Literals(["DEAD", "FAILED"])),
  all: Schema.optionalKey(Schema.Boolean),
  dry_run: Schema.optionalKey(Schema.Boolean),
  actor: Schema.optionalKey(Text),
})

const StuckQuery = Schema.Struct({ limit: Schema.optionalKey(LimitParam) })

const FreeBody = Schema.Struct({
  ids: Schema.optionalKey(Schema.Array(RowId)),
  all: Schema.optionalKey(Schema.Boolean),
  dry_run: Schema.optionalKey(Schema.Boolean),
  actor: Schema.optionalKey(Text),
})

const strict = { onExcessProperty: "error", errors: "all" } as const

/** Schema messages put the path on a line of its own; an API error reads better as one line. */
const oneLine = (e: Schema.SchemaError): string => e.message.replace(/\n\s+at /g, " at ").replace(/\n/g, "; ")

export interface ReplayRequest {
  readonly selection: EventSelection
  readonly dryRun: boolean
  readonly actor: string
}

/** GET /admin/dead-letters query: the CLI's `dlq list` filters. */
export const decodeDeadLetterQuery = (params: unknown): Result.Result<EventSelection, string> =>
  Result.map(
    Result.mapError(Schema.decodeUnknownResult(DeadLetterQuery, strict)(params), oneLine),
    (q): EventSelection => ({
      eventType: q.event_type,
      since: q.since,
      until: q.until,
      reason: q.reason,
      limit: q.limit === undefined ? 100 : Number(q.limit),
    }),
  )

/** POST /admin/replay body: at least one selector, or `all: true` for every row of the status. */
export const decodeReplayRequest = (body: unknown): Result.Result<ReplayRequest, string> => {
  const decoded = Schema.decodeUnknownResult(ReplayBody, strict)(body)
  if (Result.isFailure(decoded)) return Result.fail(oneLine(decoded.failure))
  const b = decoded.success
  const ids = b.ids?.map(String) ?? []
  const dedupKeys = b.dedup_keys ?? []
  if (ids.length + dedupKeys.length > MAX_SELECTORS) return Result.fail(`at most ${MAX_SELECTORS} ids and dedup_keys per replay`)
  const narrowed = ids.length > 0 || dedupKeys.length > 0 || [b.event_type, b.reason, b.since, b.until].some((v) => v !== undefined)
  if (!narrowed && b.all !== true) {
    return Result.fail('name what to replay (ids, dedup_keys, event_type, reason, since, until), or pass "all": true')
  }
  return Result.succeed({
    selection: {
      ids,
      dedupKeys,
      eventType: b.event_type,
      reason: b.reason,
      since: b.since,
      until: b.until,
      status: b.status ?? "DEAD",
    },
    dryRun: b.dry_run ?? false,
    actor: b.actor ?? "admin-api",
  })
}

/** GET /admin/stuck query: how many rows of each listing. */
export const decodeStuckQuery = (params: unknown): Result.Result<number, string> =>
  Result.map(Result.mapError(Schema.decodeUnknownResult(StuckQuery, strict)(params), oneLine), (q) =>
    q.limit === undefined ? 100 : Number(q.limit),
  )

export interface FreeRequest {
  readonly selection: FreeSelection
  readonly dryRun: boolean
  readonly actor: string
}

/** POST /admin/stuck/free body: ids, or `all: true` for every row beyond the settings. */
export const decodeFreeRequest = (body: unknown): Result.Result<FreeRequest, string> => {
  const decoded = Schema.decodeUnknownResult(FreeBody, strict)(body)
  if (Result.isFailure(decoded)) return Result.fail(oneLine(decoded.failure))
  const b = decoded.success
  const ids = b.ids?.map(String) ?? []
  if (ids.length > MAX_SELECTORS) return Result.fail(`at most ${MAX_SELECTORS} ids per request`)
  if (ids.length === 0 && b.all !== true)
    return Result.fail('name the rows to free (ids), or pass "all": true for every row beyond the settings')
  return Result.succeed({ selection: { ids, all: b.all ?? false }, dryRun: b.dry_run ?? false, actor: b.actor ?? "admin-api" })
}
