import type { SqlError } from "effect/sql"
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

export const toDatabaseError = (operation: string) => (cause: SqlError.SqlError) =>
  new DatabaseError({ operation, message: `${operation}: ${sqlErrorMessage(cause)}`, cause })
