import { Result } from "effect"
import { describe, expect, it } from "vitest"
import { DEFAULT_EVENT_TYPES, DEFAULT_TOPIC_MAP, isValidTopicName, mergeTopicMap, topicFor } from "../../src/domain/event-types.ts"
import type { ClaimedEvent } from "../../src/domain/outbox-event.ts"
import { buildRecord } from "../../src/kafka/records.ts"

const event = (over: Partial<ClaimedEvent> = {}): ClaimedEvent => ({
  id: "1",
  eventId: "7c9e6679-7425-40de-944b-e07fc1f90ae7",
  dedupKey: "order-1-created",
  eventType: "search_click",
  aggregateKey: "session-9",
  payload: '{"q":"shoes"}',
  headers: "{}",
  oversize: null,
  requestId: "req-1",
  traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
  attempts: 0,
  waitingDeadLetter: null,
  createdAtMs: 0,
  takenOverFrom: null,
  lease: "",
  ...over,
})

describe("topic mapping", () => {
  it("maps every default event type to a valid topic", () => {
    expect(DEFAULT_EVENT_TYPES).toEqual([
      "search_impression",
      "search_click",
      "search_dwell",
      "ac_impression",
      "ac_select",
      "admin_domain_event",
      "reindex_event",
      "job_run_event",
    ])
    for (const type of DEFAULT_EVENT_TYPES) expect(isValidTopicName(topicFor(DEFAULT_TOPIC_MAP, type)!)).toBe(true)
  })

  it("lets configuration override a default and add new types", () => {
    const map = mergeTopicMap({ search_click: "clicks", order_placed: "orders" })
    expect(topicFor(map, "search_click")).toBe("clicks")
    expect(topicFor(map, "order_placed")).toBe("orders")
  })

  it("has no topic for an unknown type, nor for inherited object keys", () => {
    expect(topicFor(DEFAULT_TOPIC_MAP, "nope")).toBeUndefined()
    expect(topicFor(DEFAULT_TOPIC_MAP, "constructor")).toBeUndefined()
  })
})

describe("record building", () => {
  it("keys by aggregate_key, else dedup_key, and carries the correlation headers", () => {
    const r = Result.getOrThrow(buildRecord(event({ headers: '{"tenant":"acme","n":3}' }), DEFAULT_TOPIC_MAP))
    expect(r.topic).toBe(DEFAULT_TOPIC_MAP.search_click)
    expect(r.key).toBe("session-9")
    expect(r.value).toBe('{"q":"shoes"}')
    expect(r.headers).toEqual({
      tenant: "acme",
      n: "3",
      event_id: "7c9e6679-7425-40de-944b-e07fc1f90ae7",
      dedup_key: "order-1-created",
      event_type: "search_click",
      request_id: "req-1",
      traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    })
    expect(Result.getOrThrow(buildRecord(event({ aggregateKey: null }), DEFAULT_TOPIC_MAP)).key).toBe("order-1-created")
  })

  it("never lets the row's own headers overwrite the relay's", () => {
    const r = Result.getOrThrow(buildRecord(event({ headers: '{"event_id":"spoofed"}' }), DEFAULT_TOPIC_MAP))
    expect(r.headers.event_id).toBe("7c9e6679-7425-40de-944b-e07fc1f90ae7")
  })

  it("drops the row's headers named like the relay's in any case, and the dead-letter namespace", () => {
    const own =
      '{"DEDUP_KEY":"spoofed","Event_Id":"x","Request_ID":"y","TraceParent":"z","dlq.reason":"fake","DLQ.Error":"e","tenant":"acme"}'
    const r = Result.getOrThrow(buildRecord(event({ headers: own, requestId: null }), DEFAULT_TOPIC_MAP))
    expect(r.headers).toEqual({
      tenant: "acme",
      event_id: "7c9e6679-7425-40de-944b-e07fc1f90ae7",
      dedup_key: "order-1-created",
      event_type: "search_click",
      traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    })
  })

  it("drops an invalid traceparent instead of losing the event", () => {
    const r = Result.getOrThrow(buildRecord(event({ traceparent: "not-a-traceparent" }), DEFAULT_TOPIC_MAP))
    expect(r.headers.traceparent).toBeUndefined()
  })

  it("refuses unknown event types and malformed headers with the dead-letter reason", () => {
    const unknown = buildRecord(event({ eventType: "mystery" }), DEFAULT_TOPIC_MAP)
    expect(Result.isFailure(unknown) && unknown.failure.reason).toBe("unknown_event_type")
    const badHeaders = buildRecord(event({ headers: '{"nested":{"a":1}}' }), DEFAULT_TOPIC_MAP)
    expect(Result.isFailure(badHeaders) && badHeaders.failure.reason).toBe("invalid_record")
    const arrayHeaders = buildRecord(event({ headers: "[1,2]" }), DEFAULT_TOPIC_MAP)
    expect(Result.isFailure(arrayHeaders) && arrayHeaders.failure.reason).toBe("invalid_record")
  })
})
