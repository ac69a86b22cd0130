/**
 * The table refuses what the relay cannot carry: every ROW_LIMITS bound becomes a CHECK
 * constraint, so an INSERT that breaks one fails in the writer's own transaction with
 * PostgreSQL's error naming the constraint, instead of a claim discovering the row later.
 *
 * The constraints are added NOT VALID: that takes a brief lock and reads no row, however much
 * history the table keeps. PostgreSQL still checks them on every INSERT and every UPDATE, so a
 * row that already broke a bound could take no mark at all. Such rows are settled here, once:
 * - pending rows (NEW, FAILED), found through the pending partial index (no scan of history),
 *   become DEAD with dead_reason `out_of_limits`; last_error names the bounds they broke and the
 *   sizes they had; their columns are brought within the limits (WITHIN_LIMITS_SET: long text
 *   cut, headers that are not an object of strings dropped, numbers clamped, infinite times made
 *   finite) and their leases cleared. No dead letter is sent for them: the migration does not
 *   talk to Kafka. `outbox-relay dlq list --reason out_of_limits` lists them.
 * - SENT and DEAD rows that break a bound stay as they are: the relay never reads or writes
 *   them again, and rewriting history would cost a scan of the whole table. That is why the
 *   constraints stay NOT VALID (VALIDATE CONSTRAINT would fail on them). Replaying one (`replay`
 *   sets it back to NEW) is refused by PostgreSQL with the constraint's name: the replay fails as
 *   a whole, nothing is requeued, and the operator sees which bound the row breaks.
 *
 * The lock taken by ADD CONSTRAINT is held until the migration commits, so it covers settling
 * the pending rows too; a row inserted concurrently is either seen by the settling UPDATE or
 * checked by the constraints, never neither.
 */
import { ROW_LIMITS } from "../../domain/row-limits.ts"
import { BROKEN_CHECKS, ROW_CHECKS, WITHIN_LIMITS_SET } from "../row-limits-sql.ts"

/** What a settled row had, so the operator can see why without the original values. */
const ORIGINAL_SIZES = `format(
  'broke %s when migration 7 bounded the row (octets: event_type %s, aggregate_key %s, dedup_key %s, request_id %s, traceparent %s; headers %s; attempts %s; next_attempt_at %s; locked_until %s)',
  array_to_string(${BROKEN_CHECKS}, ', '),
  octet_length(event_type), coalesce(octet_length(aggregate_key)::text, 'null'), octet_length(dedup_key),
  coalesce(octet_length(request_id)::text, 'null'), coalesce(octet_length(traceparent)::text, 'null'),
  jsonb_typeof(headers) || ' of ' || octet_length(headers::text) || ' octets', attempts, next_attempt_at, coalesce(locked_until::text, 'null'))`

const ALL_CHECKS = ROW_CHECKS.map(([, condition]) => `(${condition})`).join(" AND ")

export const statements: ReadonlyArray<string> = [
  ...ROW_CHECKS.map(([name, condition]) => `ALTER TABLE outbox_event ADD CONSTRAINT ${name} CHECK (${condition}) NOT VALID`),
  // The planner might read the whole table for a status filter on a table it has no statistics
  // for yet; only the pending rows can need settling, and the partial index holds just those.
  `SET LOCAL enable_seqscan = off`,
  // NOT (…) IS NOT FALSE: a NULL condition (a NULL column) passes a CHECK, so only FALSE breaks it.
  `UPDATE outbox_event
      SET status = 'DEAD', dead_reason = 'out_of_limits', last_error = left(${ORIGINAL_SIZES}, ${ROW_LIMITS.lastErrorChars}),
          locked_by = NULL, locked_until = NULL,
          ${WITHIN_LIMITS_SET}
    WHERE status IN ('NEW', 'FAILED') AND (${ALL_CHECKS}) IS FALSE`,
  `SET LOCAL enable_seqscan = DEFAULT`,
]
