import { Redacted, Result } from "effect"
import { describe, expect, it } from "vitest"
import { decodeDeadLetterQuery, decodeFreeRequest, decodeReplayRequest, decodeStuckQuery } from "../../src/http/admin-requests.ts"
import { bearerTokenCheck } from "../../src/http/bearer-auth.ts"

const failure = <A>(r: Result.Result<A, string>) => (Result.isFailure(r) ? r.failure : undefined)

describe("admin API input", () => {
  it("accepts only `Bearer <token>` with exactly the configured token", () => {
    const check = bearerTokenCheck(Redacted.make("s3cret-token-0123456789"))
    expect(check("Bearer s3cret-token-0123456789")).toBe(true)
    expect(check("bearer s3cret-token-0123456789")).toBe(true)
    for (const header of [
      undefined,
      "",
      "Bearer",
      "Bearer s3cret-token-012345678",
      "Bearer s3cret-token-01234567890",
      "Basic s3cret-token-0123456789",
    ]) {
      expect(check(header), String(header)).toBe(false)
    }
  })

  it("requires a replay to name its events, or all: true", () => {
    expect(failure(decodeReplayRequest({}))).toContain('"all": true')
    expect(failure(decodeReplayRequest({ dry_run: true, status: "FAILED" }))).toContain('"all": true')
    expect(Result.getOrThrow(decodeReplayRequest({ all: true })).selection.status).toBe("DEAD")
    expect(Result.getOrThrow(decodeReplayRequest({ ids: [7, "8"], actor: "ops" }))).toEqual({
      selection: { ids: ["7", "8"], dedupKeys: [], status: "DEAD" },
      dryRun: false,
      actor: "ops",
    })
  })

  it("rejects unknown fields and malformed selectors instead of widening the replay", () => {
    expect(failure(decodeReplayRequest({ dedupKeys: ["a"] }))).toContain("dedupKeys")
    expect(failure(decodeReplayRequest({ ids: ["1; DROP TABLE"] }))).toContain("ids")
    expect(failure(decodeReplayRequest({ ids: [0] }))).toContain("ids")
    expect(failure(decodeReplayRequest({ ids: [1.5] }))).toContain("ids")
  })

  it("refuses ids beyond the table's bigint range, and numbers JSON cannot carry exactly", () => {
    expect(Result.getOrThrow(decodeReplayRequest({ ids: ["9223372036854775807", 9007199254740991] })).selection.ids).toEqual([
      "9223372036854775807",
      "9007199254740991",
    ])
    for (const id of ["9223372036854775808", "9999999999999999999", "99999999999999999999", "09", "-1"]) {
      expect(failure(decodeReplayRequest({ ids: [id] })), id).toContain("from 1 to 9223372036854775807")
    }
    // 2^63 as a JSON number arrives rounded: refused, with the advice to send it as a string.
    expect(failure(decodeReplayRequest({ ids: [2 ** 63] }))).toContain("must be given as a string")
    expect(failure(decodeReplayRequest({ ids: [2 ** 53 + 2] }))).toContain("must be given as a string")
    expect(failure(decodeReplayRequest({ since: "last week" }))).toContain("since")
    expect(failure(decodeReplayRequest({ all: true, status: "SENT" }))).toContain("status")
    expect(failure(decodeReplayRequest({ all: "yes" }))).toContain("all")
    expect(failure(decodeReplayRequest([]))).toBeDefined()
  })

  it("reads the dead-letter list filters like the CLI, defaulting to 100 rows", () => {
    expect(Result.getOrThrow(decodeDeadLetterQuery({ event_type: "search_click", since: "2024-05-01T00:00:00Z" }))).toEqual({
      eventType: "search_click",
      since: "2024-05-01T00:00:00Z",
      limit: 100,
    })
    expect(failure(decodeDeadLetterQuery({ limit: "1001" }))).toContain("limit")
    expect(failure(decodeDeadLetterQuery({ until: "2024-13-45" }))).toContain("until")
    expect(failure(decodeDeadLetterQuery({ reason: "boom" }))).toContain("reason")
  })

  it("frees stuck rows only when named (ids) or asked for all of them, and refuses anything else", () => {
    expect(failure(decodeFreeRequest({}))).toContain('"all": true')
    expect(failure(decodeFreeRequest({ dry_run: true }))).toContain('"all": true')
    expect(failure(decodeFreeRequest({ ids: ["9223372036854775808"] }))).toContain("ids")
    expect(failure(decodeFreeRequest({ all: true, status: "NEW" }))).toContain("status")
    expect(Result.getOrThrow(decodeFreeRequest({ ids: [7, "8"], actor: "ops" }))).toEqual({
      selection: { ids: ["7", "8"], all: false },
      dryRun: false,
      actor: "ops",
    })
    expect(Result.getOrThrow(decodeFreeRequest({ all: true, dry_run: true }))).toEqual({
      selection: { ids: [], all: true },
      dryRun: true,
      actor: "admin-api",
    })
    expect(Result.getOrThrow(decodeStuckQuery({}))).toBe(100)
    expect(Result.getOrThrow(decodeStuckQuery({ limit: "5" }))).toBe(5)
    expect(failure(decodeStuckQuery({ limit: "5000" }))).toContain("limit")
    expect(failure(decodeStuckQuery({ since: "2020-01-01" }))).toContain("since")
  })
})
