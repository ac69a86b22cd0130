/** Which database errors the consumer waits out (outages) and which it charges to the message (then dead-letters). */
import { describe, expect, it } from "@effect/vitest"
import { SqlError } from "effect/sql"
import { classifyDatabaseError } from "../../src/consumer/database-errors.ts"

const pgError = (code: string | undefined, message: string) => Object.assign(new Error(message), code === undefined ? {} : { code })
const unknown = (code: string | undefined, message = "failed") =>
  new SqlError.SqlError({ reason: new SqlError.UnknownError({ cause: pgError(code, message), message: "PgConnection: Query failed" }) })
const connection = (message: string) =>
  new SqlError.SqlError({ reason: new SqlError.ConnectionError({ cause: new Error(message), message: `PgConnection: ${message}` }) })

describe("consumer database error classification", () => {
  it.each([
    ["08006", "connection failure"],
    ["57P01", "terminating connection due to administrator command"],
    ["57P02", "crash shutdown"],
    ["57P03", "the database system is starting up"],
    ["53300", "too many connections"],
    ["40P01", "deadlock detected"],
    ["42P01", 'relation "consumer_inbox" does not exist'],
  ])("SQLSTATE %s (%s) is an outage: waited out in place", (code, message) => {
    expect(classifyDatabaseError(unknown(code, message))).toEqual({ code, message, kind: "outage" })
  })

  it.each([
    ["22021", "invalid byte sequence for encoding UTF8: 0x00"],
    ["22001", "value too long for type character varying(10)"],
    ["23514", 'new row violates check constraint "no_rejected_keys"'],
    ["54000", "index row size exceeds maximum"],
    ["57014", "canceling statement due to statement timeout"],
  ])("SQLSTATE %s (%s) is the message's: retried within the budget, then dead-lettered", (code, message) => {
    expect(classifyDatabaseError(unknown(code, message))).toEqual({ code, message, kind: "message" })
  })

  it("a connection the driver saw close, without a SQLSTATE, is an outage", () => {
    expect(classifyDatabaseError(connection("Connection closed"))).toMatchObject({ code: undefined, kind: "outage" })
  })

  it("an unclassified error without a SQLSTATE is the message's, so it cannot block the partition for good", () => {
    expect(classifyDatabaseError(unknown(undefined, "COMMIT returned ROLLBACK"))).toMatchObject({ code: undefined, kind: "message" })
  })
})
