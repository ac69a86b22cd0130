import { readFileSync } from "node:fs"
import { describe, expect, it } from "@effect/vitest"
import { ROW_LIMITS } from "../../src/domain/row-limits.ts"
import { ROW_CHECKS } from "../../src/outbox/row-limits-sql.ts"

const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8")
const limitsSection = readme.slice(readme.indexOf("### The outbox table's limits"), readme.indexOf("### Commands"))
const rowOf = (constraint: string) =>
  limitsSection.split("\n").find((line) => line.startsWith("|") && line.includes(`\`${constraint}\``)) ?? ""

describe("README", () => {
  it("lists every row limit the table enforces, with the numbers of ROW_LIMITS", () => {
    for (const [name] of ROW_CHECKS) expect(rowOf(name), name).not.toBe("")
    expect(rowOf("outbox_event_event_type_bytes")).toContain(`at most ${ROW_LIMITS.eventTypeBytes} bytes`)
    expect(rowOf("outbox_event_aggregate_key_bytes")).toContain(`at most ${ROW_LIMITS.aggregateKeyBytes} bytes`)
    expect(rowOf("outbox_event_dedup_key_bytes")).toContain(`at most ${ROW_LIMITS.dedupKeyBytes} bytes`)
    expect(rowOf("outbox_event_request_id_bytes")).toContain(`at most ${ROW_LIMITS.requestIdBytes} bytes`)
    expect(rowOf("outbox_event_traceparent_bytes")).toContain(`at most ${ROW_LIMITS.traceparentBytes} bytes`)
    expect(rowOf("outbox_event_attempts_range")).toContain(`0 to ${ROW_LIMITS.maxAttempts}`)
  })
})
