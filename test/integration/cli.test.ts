/** The `outbox-relay` command as users run it: a real process, its exit code and what it prints. */
import { execFile } from "node:child_process"
import { createServer, type Server } from "node:net"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import { inject } from "vitest"
import { LATEST_SCHEMA_VERSION } from "../../src/outbox/migrations/index.ts"
import { sqlLayer, testDatabase } from "../support/test-database.ts"

const BIN = fileURLToPath(new URL("../../bin/outbox-relay", import.meta.url))

interface Run {
  readonly code: number
  readonly output: string
}

const outboxRelay = (args: ReadonlyArray<string>, env: Record<string, string>, timeoutMs = 30_000) =>
  Effect.callback<Run>((resume) => {
    // Only what the test gives: no variable from the developer's shell may leak in.
    const child = execFile(BIN, [...args], { env: { PATH: process.env.PATH ?? "", ...env }, timeout: timeoutMs }, (error, stdout, stderr) =>
      resume(Effect.succeed({ code: error === null ? 0 : typeof error.code === "number" ? error.code : -1, output: `${stdout}${stderr}` })),
    )
    return Effect.sync(() => child.kill("SIGKILL"))
  })

/** A TCP listener that only counts connections: proof that nothing was dialled. */
const connectionCounter = Effect.acquireRelease(
  Effect.callback<{ server: Server; port: number; count: () => number }>((resume) => {
    let n = 0
    const server = createServer((socket) => {
      n++
      socket.destroy()
    })
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      resume(Effect.succeed({ server, port: typeof address === "object" && address !== null ? address.port : 0, count: () => n }))
    })
  }),
  ({ server }) => Effect.sync(() => server.close()),
)

describe("outbox-relay command", () => {
  it.live("names every invalid variable in one message and exits non-zero before connecting anywhere", () =>
    Effect.gen(function* () {
      const listener = yield* connectionCounter
      const run = yield* outboxRelay(["run"], {
        DATABASE_URL: `postgres://u:topsecret@127.0.0.1:${listener.port}/db`,
        KAFKA_BROKERS: `127.0.0.1:${listener.port}`,
        BATCH_SIZE: "5000",
        POLL_INTERVAL_MS: "50",
        LOG_FORMAT: "xml",
        TOPIC_MAP: "{oops",
      })
      expect(run.code).toBe(2)
      for (const name of ["BATCH_SIZE", "POLL_INTERVAL_MS", "LOG_FORMAT", "TOPIC_MAP"]) expect(run.output).toContain(name)
      expect(run.output).not.toContain("topsecret")
      expect(listener.count()).toBe(0)
    }),
  )

  it.live("rejects a malformed DATABASE_URL and a batch size of 0", () =>
    Effect.gen(function* () {
      const run = yield* outboxRelay(["run"], { DATABASE_URL: "http://nope", KAFKA_BROKERS: "localhost", BATCH_SIZE: "0" })
      expect(run.code).toBe(2)
      for (const name of ["DATABASE_URL", "KAFKA_BROKERS", "BATCH_SIZE"]) expect(run.output).toContain(name)
    }),
  )

  it.live("migrates once, then again harmlessly, and the relay refuses an unmigrated or newer schema", () =>
    Effect.gen(function* () {
      const db = yield* testDatabase({ migrated: false })
      // `run` serves HTTP before its schema check: any free port, so a busy 8080 cannot decide the outcome.
      const env = { DATABASE_URL: db.url, KAFKA_BROKERS: inject("kafkaBrokers"), HTTP_PORT: "0" }

      const unmigrated = yield* outboxRelay(["run"], env)
      expect(unmigrated.code).toBe(1)
      expect(unmigrated.output).toContain("run `outbox-relay migrate`")

      const first = yield* outboxRelay(["migrate"], { DATABASE_URL: db.url })
      expect(first.code).toBe(0)
      expect(first.output).toContain(`from version 0 to ${LATEST_SCHEMA_VERSION}`)
      const second = yield* outboxRelay(["migrate"], { DATABASE_URL: db.url })
      expect(second.code).toBe(0)
      expect(second.output).toContain("up to date")

      yield* Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`INSERT INTO outbox_relay_schema (version, name) VALUES (999, 'from the future')`
      }).pipe(Effect.provide(sqlLayer(db.url)), Effect.orDie)
      const newer = yield* outboxRelay(["run"], env)
      expect(newer.code).toBe(1)
      expect(newer.output).toContain("upgrade the relay")
    }),
  )

  it.live("prints help for every command", () =>
    Effect.gen(function* () {
      for (const command of [[], ["run"], ["migrate"], ["demo"]]) {
        const help = yield* outboxRelay([...command, "--help"], {})
        expect(help.code).toBe(0)
        expect(help.output).toContain("USAGE")
      }
    }),
  )
})
