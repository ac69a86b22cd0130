/** Which database errors the consumer waits out (outages) and which it charges to the message (then dead-letters). */
import { existsSync, readFileSync } from "node:fs"
import { describe, expect, it } from "@effect/vitest"
import { SqlError } from "effect/sql"
import { CHARGED_TO_MESSAGE, classifyDatabaseError, consumerKindOf } from "../../src/consumer/database-errors.ts"

const pgError = (code: string | undefined, message: string) =>
  Object.assign(new Error(message), code === undefined ? {} : { code, severity: "ERROR" })
const unknown = (code: string | undefined, message = "failed") =>
  new SqlError.SqlError({ reason: new SqlError.UnknownError({ cause: pgError(code, message), message: "PgConnection: Query failed" }) })
const connection = (message: string) =>
  new SqlError.SqlError({ reason: new SqlError.ConnectionError({ cause: new Error(message), message: `PgConnection: ${message}` }) })

// PostgreSQL's own list of SQLSTATEs, shipped with the server (and installed in CI).
const ERRCODES = "/usr/share/postgresql/15/errcodes.txt"
const errcodes = existsSync(ERRCODES)
  ? readFileSync(ERRCODES, "utf8")
      .split("\n")
      .map((line) => /^([0-9A-Z]{5})\s+([EWS])\s+\S+\s*(\S*)/.exec(line))
      .filter((m) => m !== null)
      .map((m) => ({ code: m[1] ?? "", severity: m[2] ?? "", name: m[3] ?? "" }))
  : []

/** What the consumer must do with each class of PostgreSQL's list: the rule the issue states, written independently of the module. */
const expectedKind = (code: string): "outage" | "message" => {
  if (code === "57014") return "message" // statement_timeout: the message's query would hit it on every retry
  if (["25006", "25P03", "3D000", "55P03", "55006"].includes(code)) return "outage"
  const cls = code.slice(0, 2)
  if (["08", "28", "40", "42", "0A", "53", "57", "58", "XX"].includes(cls)) return "outage"
  return "message"
}

describe("consumer database error classification", () => {
  it.each([
    ["08006", "connection failure"],
    ["25006", "cannot execute INSERT in a read-only transaction"],
    ["57P01", "terminating connection due to administrator command"],
    ["57P02", "crash shutdown"],
    ["57P03", "the database system is starting up"],
    ["57P04", "database dropped"],
    ["57P05", "terminating connection due to idle-session timeout"],
    ["53300", "too many connections"],
    ["58030", "could not write to file"],
    ["40P01", "deadlock detected"],
    ["55P03", "canceling statement due to lock timeout"],
    ["42P01", 'relation "consumer_inbox" does not exist'],
  ])("SQLSTATE %s (%s) is an outage: waited out in place", (code, message) => {
    expect(classifyDatabaseError(unknown(code, message))).toMatchObject({ code, message, kind: "outage" })
  })

  it.each([
    ["22021", "invalid byte sequence for encoding UTF8: 0x00"],
    ["22001", "value too long for type character varying(10)"],
    ["23514", 'new row violates check constraint "no_rejected_keys"'],
    ["54000", "index row size exceeds maximum"],
    ["57014", "canceling statement due to statement timeout"],
    ["P0001", "raised by a trigger"],
  ])("SQLSTATE %s (%s) is the message's: retried within the budget, then dead-lettered", (code, message) => {
    expect(classifyDatabaseError(unknown(code, message))).toMatchObject({ code, message, kind: "message" })
  })

  it("a connection the driver saw close, without a SQLSTATE, is an outage", () => {
    expect(classifyDatabaseError(connection("Connection closed"))).toMatchObject({ code: undefined, kind: "outage" })
  })

  it("an unclassified error without a SQLSTATE is the message's, so it cannot block the partition for good", () => {
    expect(classifyDatabaseError(unknown(undefined, "COMMIT returned ROLLBACK"))).toMatchObject({ code: undefined, kind: "message" })
  })

  describe.skipIf(errcodes.length === 0)(`every SQLSTATE in PostgreSQL's ${ERRCODES}`, () => {
    it("is read (the file lists the outage classes the consumer waits out)", () => {
      expect(errcodes.length).toBeGreaterThan(200)
      for (const cls of ["08", "25", "53", "57", "58"])
        expect(
          errcodes.some((e) => e.code.startsWith(cls)),
          cls,
        ).toBe(true)
    })

    it("gets the consumer's verdict for its class: 08, 25006, 53, 57 (but 57014), 58 … wait; data errors are the message's", () => {
      const wrong = errcodes
        .filter((e) => e.severity === "E")
        .map((e) => ({ ...e, got: consumerKindOf(e.code), want: expectedKind(e.code) }))
        .filter((e) => e.got !== e.want)
      expect(wrong).toEqual([])
    })

    it("names only codes PostgreSQL has", () => {
      const known = new Set(errcodes.map((e) => e.code))
      for (const code of CHARGED_TO_MESSAGE) expect(known.has(code), code).toBe(true)
    })
  })
  it.runIf(errcodes.length === 0)(`${ERRCODES} is absent: the table test against PostgreSQL's list was skipped`, () => {
    expect(existsSync(ERRCODES)).toBe(false)
  })
})
