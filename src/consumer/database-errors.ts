/**
 * Whose fault a database error is, read from its SQLSTATE. An outage (connection lost, a
 * server starting or shutting down, out of resources) is nobody's message: the message
 * waits in place until the database is back. An error the message's own values cause
 * (invalid byte sequence, value too long, a constraint) would fail on every retry: it gets
 * the handler's retry budget, then the dead-letter topic, so it cannot block its partition.
 */
import { Cause } from "effect"
import { SqlError } from "effect/sql"

export interface DatabaseErrorInfo {
  /** The SQLSTATE, when PostgreSQL sent one. */
  readonly code: string | undefined
  readonly message: string
  /** outage: wait in place, never dead-letter; message: bounded retries, then dead letter. */
  readonly kind: "outage" | "message"
}

// Class 08: connection exception; 53: insufficient resources; 57P01-57P05: admin/crash
// shutdown, cannot connect now, database dropped, idle session timeout; 58: system error (I/O);
// 40: serialization failure and deadlock (transient by definition); 55P03 lock not available;
// 28: authentication; 3D000: no such database; 42: the schema (a missing table or a revoked
// grant is the operator's to fix, and dead-lettering every message would not fix it).
// Not here: 57014 (statement timeout), which one message's query can hit every time.
const OUTAGE_CLASSES = ["08", "53", "58", "40", "28", "42"]
const OUTAGE_CODES = new Set(["57P01", "57P02", "57P03", "57P04", "57P05", "55P03", "3D000"])

const fieldsOf = (error: SqlError.SqlError): { readonly code: string | undefined; readonly message: string } => {
  const cause: unknown = error.reason.cause
  const code =
    typeof cause === "object" && cause !== null && "code" in cause && typeof cause.code === "string" && /^[0-9A-Z]{5}$/.test(cause.code)
      ? cause.code
      : undefined
  const detail = cause instanceof Error && cause.message !== "" ? cause.message : error.message
  return { code, message: detail }
}

export const classifyDatabaseError = (error: SqlError.SqlError): DatabaseErrorInfo => {
  const { code, message } = fieldsOf(error)
  if (code === undefined) {
    // No SQLSTATE: the driver lost or could not open the connection, or saw a protocol desync.
    const outage = error.reason._tag === "ConnectionError" || error.reason._tag === "AuthenticationError"
    return { code, message, kind: outage ? "outage" : "message" }
  }
  const outage = OUTAGE_CODES.has(code) || OUTAGE_CLASSES.includes(code.slice(0, 2))
  return { code, message, kind: outage ? "outage" : "message" }
}

/** The first SqlError in a failure's cause (a handler's own query failing, wrapped or not). */
export const findSqlError = (cause: Cause.Cause<unknown>): SqlError.SqlError | undefined => {
  for (const reason of cause.reasons) {
    const error = Cause.isFailReason(reason) ? reason.error : Cause.isDieReason(reason) ? reason.defect : undefined
    if (SqlError.isSqlError(error)) return error
  }
  return undefined
}
