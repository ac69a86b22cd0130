/**
 * Whose fault a database error is, for the consumer. The SQLSTATE is read once, by the
 * project's one mapping (src/domain/database-fault.ts); this module only decides what each
 * fault means for one message in a partition:
 * - `outage` and `conflict` wait in place (never dead-lettered): the database cannot serve
 *   now (connection lost, shutting down, read-only after a failover, out of resources), or
 *   the statement lost a race (deadlock, serialization, lock_timeout) that a retry wins.
 * - `data` is the message's: its values are refused, and would be on every retry. It gets
 *   the handler's retry budget, then the dead-letter topic, so it cannot block its partition.
 * - `programming`: a missing table or grant (42), an unsupported feature (0A). Every message
 *   would fail the same way until an operator acts, and dead-lettering the whole stream
 *   would not fix it, so these wait too. Any other code the mapping does not know (P0001
 *   raised by a user's trigger, …) is charged to the message, so it cannot block for good.
 *
 * The consumer's one exception to the shared mapping: 57014 (statement_timeout) is a
 * `conflict` there, but here it is charged to the message. A query of one message that runs
 * past the role's statement_timeout does so on every retry; waiting it out would stop the
 * partition for good. A transient slowness still gets the whole retry budget first.
 */
import { Cause } from "effect"
import { SqlError } from "effect/sql"
import { type DatabaseFault, faultOfSqlState, sqlStateOf } from "../domain/database-fault.ts"

export interface DatabaseErrorInfo {
  /** The SQLSTATE, when PostgreSQL sent one. */
  readonly code: string | undefined
  readonly message: string
  /** The shared mapping's verdict, for logs. */
  readonly fault: DatabaseFault
  /** outage: wait in place, never dead-letter; message: bounded retries, then dead letter. */
  readonly kind: "outage" | "message"
}

/** SQLSTATEs the consumer charges to the message although the shared mapping would wait. */
export const CHARGED_TO_MESSAGE: ReadonlySet<string> = new Set(["57014"])
/** Classes of `programming` faults that every message meets alike: waited out until an operator acts. */
const SCHEMA_CLASSES: ReadonlySet<string> = new Set(["42", "0A"])

/** The consumer's verdict for a SQLSTATE (undefined: no SQLSTATE, the connection is gone). */
export const consumerKindOf = (code: string | undefined): DatabaseErrorInfo["kind"] => {
  const fault = faultOfSqlState(code)
  if (code !== undefined && CHARGED_TO_MESSAGE.has(code)) return "message"
  switch (fault) {
    case "outage":
    case "conflict":
      return "outage"
    case "data":
      return "message"
    case "programming":
      return code !== undefined && SCHEMA_CLASSES.has(code.slice(0, 2)) ? "outage" : "message"
  }
}

const SQLSTATE = /^[0-9A-Z]{5}$/

const codeOf = (error: SqlError.SqlError): string | undefined => {
  const found = sqlStateOf(error)
  if (found !== undefined) return found
  // A server error the driver passed on without its severity still carries the code.
  const cause: unknown = error.reason.cause
  return typeof cause === "object" && cause !== null && "code" in cause && typeof cause.code === "string" && SQLSTATE.test(cause.code)
    ? cause.code
    : undefined
}

export const classifyDatabaseError = (error: SqlError.SqlError): DatabaseErrorInfo => {
  const cause: unknown = error.reason.cause
  const message = cause instanceof Error && cause.message !== "" ? cause.message : error.message
  const code = codeOf(error)
  if (code === undefined) {
    // No SQLSTATE: the driver lost or could not open the connection, or saw a protocol desync.
    // Only the first two are outages; anything else without a code must not block for good.
    const outage = error.reason._tag === "ConnectionError" || error.reason._tag === "AuthenticationError"
    return { code, message, fault: outage ? "outage" : "programming", kind: outage ? "outage" : "message" }
  }
  return { code, message, fault: faultOfSqlState(code), kind: consumerKindOf(code) }
}

/** The first SqlError in a failure's cause (a handler's own query failing, wrapped or not). */
export const findSqlError = (cause: Cause.Cause<unknown>): SqlError.SqlError | undefined => {
  for (const reason of cause.reasons) {
    const error = Cause.isFailReason(reason) ? reason.error : Cause.isDieReason(reason) ? reason.defect : undefined
    if (SqlError.isSqlError(error)) return error
  }
  return undefined
}
