/**
 * Whose fault a database error is, read once from its SQLSTATE (PostgreSQL's errcodes), the
 * way effect-smol's SqlError carries `isRetryable`. Relay and consumer read the fault and
 * never look at the code again:
 * - `outage`: the database cannot serve now (connection lost, shutting down, read-only after a
 *   failover, out of resources). Nobody's row is at fault: wait and reconnect.
 * - `conflict`: this statement lost a race (serialization failure, deadlock, lock or statement
 *   timeout). Retrying soon is expected to succeed.
 * - `data`: the values in the statement are refused (class 22 data exception, 23 integrity
 *   constraint, 54 program limit such as an index row too large). Retrying the same values
 *   fails the same way: isolate the rows that carry them.
 * - `programming`: the statement or the schema is wrong (42 syntax or undefined object or
 *   privilege, 0A unsupported, and anything unrecognised). Fail loudly; an operator must act.
 */
export type DatabaseFault = "outage" | "conflict" | "data" | "programming"

// Whole classes first; single codes below override their class.
const BY_CLASS: Readonly<Record<string, DatabaseFault>> = {
  "08": "outage", // connection exception
  "28": "outage", // invalid authorization (a rotated password: the operator fixes it, rows wait)
  "53": "outage", // insufficient resources (disk full, out of memory, too many connections)
  "57": "outage", // operator intervention (admin/crash shutdown, cannot connect now)
  "58": "outage", // system error (I/O)
  XX: "outage", // internal error, data corrupted: the server's, not a row's
  "40": "conflict", // transaction rollback: serialization failure, deadlock
  "22": "data", // data exception: out of range, invalid text, string too long
  "23": "data", // integrity constraint: not null, check, unique, foreign key
  "54": "data", // program limit exceeded: index row size, too many columns
}

const BY_CODE: Readonly<Record<string, DatabaseFault>> = {
  "25006": "outage", // read_only_sql_transaction: a demoted primary after a failover
  "25P03": "outage", // idle_in_transaction_session_timeout ended our session
  "3D000": "outage", // invalid_catalog_name: the database is not there (yet)
  "55P03": "conflict", // lock_not_available (lock_timeout)
  "55006": "conflict", // object_in_use
  "57014": "conflict", // query_canceled: statement_timeout or a cancel request
  "57P04": "outage", // database_dropped
}

export const faultOfSqlState = (code: string | undefined): DatabaseFault => {
  // No SQLSTATE: the driver lost or could not open the connection.
  if (code === undefined) return "outage"
  return BY_CODE[code] ?? BY_CLASS[code.slice(0, 2)] ?? "programming"
}

const SQLSTATE = /^[0-9A-Z]{5}$/

interface Chained {
  readonly code?: unknown
  readonly severity?: unknown
  readonly cause?: unknown
  readonly reason?: unknown
}

/**
 * The SQLSTATE in an error's cause chain. pg puts it on the server's error as `code`, next to
 * `severity`; a socket error's errno code (EPIPE) has no severity and is not a SQLSTATE.
 */
export const sqlStateOf = (error: unknown): string | undefined => {
  let current: unknown = error
  for (let depth = 0; depth < 8 && typeof current === "object" && current !== null; depth++) {
    const c = current as Chained
    if (typeof c.code === "string" && typeof c.severity === "string" && SQLSTATE.test(c.code)) return c.code
    current = c.reason !== undefined && c.reason !== current ? c.reason : c.cause
  }
  return undefined
}
