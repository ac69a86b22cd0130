import type { SqlError } from "effect/sql"
import { type DatabaseFault, faultOfSqlState, sqlStateOf } from "../domain/database-fault.ts"
import { DatabaseError } from "../domain/errors.ts"

/** SqlError's own message is generic ("Query failed"); PostgreSQL's words are deeper in the cause chain. */
export const sqlErrorMessage = (error: SqlError.SqlError): string => {
  let message = error.message
  let current: unknown = error
  for (let depth = 0; depth < 6 && typeof current === "object" && current !== null; depth++) {
    const c = current as { readonly message?: unknown; readonly reason?: unknown; readonly cause?: unknown }
    if (typeof c.message === "string" && c.message !== "") message = c.message
    current = c.reason !== undefined && c.reason !== current ? c.reason : c.cause
  }
  return message
}

/**
 * The fault of a failed statement: from its SQLSTATE when the server sent one; without one,
 * a lost or refused connection is an outage, and anything else the client itself refused
 * (a protocol error, a message over its size limit) is a programming fault, loud.
 */
export const faultOf = (error: SqlError.SqlError): DatabaseFault => {
  const code = sqlStateOf(error)
  if (code !== undefined) return faultOfSqlState(code)
  return error.reason._tag === "ConnectionError" || error.reason._tag === "AuthenticationError" ? "outage" : "programming"
}

export const toDatabaseError = (operation: string) => (cause: SqlError.SqlError) =>
  new DatabaseError({
    operation,
    message: `${operation}: ${sqlErrorMessage(cause)}`,
    fault: faultOf(cause),
    sqlState: sqlStateOf(cause),
    cause,
  })
