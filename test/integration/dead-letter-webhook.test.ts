/** The ops signal of a dead letter reaches a ticketing webhook, retried when the webhook fails at first. */
import { createServer } from "node:http"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { readTopics } from "../support/kafka-reader.ts"
import { openStore, relayConfig, startRelay, withTestTopics } from "../support/relay-harness.ts"
import { testDatabase } from "../support/test-database.ts"

/** A webhook that answers 500 to its first call and 200 after, and keeps every body it got. */
const flakyWebhook = Effect.acquireRelease(
  Effect.callback<{ url: string; bodies: Array<Record<string, unknown>>; calls: () => number; close: () => void }>((resume) => {
    const bodies: Array<Record<string, unknown>> = []
    let calls = 0
    const server = createServer((req, res) => {
      let body = ""
      req.on("data", (c: Buffer) => {
        body += c.toString()
      })
      req.on("end", () => {
        calls++
        if (calls === 1) {
          res.writeHead(500).end()
          return
        }
        bodies.push(JSON.parse(body) as Record<string, unknown>)
        res.writeHead(204).end()
      })
    })
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      resume(Effect.succeed({ url: `http://127.0.0.1:${port}/tickets`, bodies, calls: () => calls, close: () => server.close() }))
    })
  }),
  (w) => Effect.sync(() => w.close()),
)

describe("dead-letter ops signal", () => {
  it.live(
    "posts a JSON ticket for a dead-lettered event to OPS_WEBHOOK_URL, retrying after a failed call",
    () =>
      Effect.gen(function* () {
        const webhook = yield* flakyWebhook
        const db = yield* testDatabase()
        const topics = yield* withTestTopics(["search_click"])
        const config = relayConfig(db.url, { ...topics.env, OPS_WEBHOOK_URL: webhook.url })
        yield* (yield* openStore(config)).append([
          { dedupKey: "poison-1", eventType: "no_such_type", aggregateKey: "k-1", payload: { n: 1 }, requestId: "req-9" },
        ])
        yield* startRelay(config)

        const dead = yield* readTopics([topics.dlq], { expected: 1 })
        expect(dead).toHaveLength(1)
        for (let i = 0; i < 100 && webhook.bodies.length === 0; i++) yield* Effect.sleep("100 millis")
        expect(webhook.calls()).toBeGreaterThanOrEqual(2)
        expect(webhook.bodies).toHaveLength(1)
        expect(webhook.bodies[0]).toMatchObject({
          type: "outbox.dead_letter",
          event_id: dead[0]!.headers.event_id,
          event_type: "no_such_type",
          dedup_key: "poison-1",
          aggregate_key: "k-1",
          reason: "unknown_event_type",
          dlq_topic: topics.dlq,
          request_id: "req-9",
        })
      }),
    60_000,
  )
})
