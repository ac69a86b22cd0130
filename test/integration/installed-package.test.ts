/**
 * The package as a user's service gets it: `npm pack`, then `npm install` of the tarball into a
 * scratch project outside the repository that has its own effect, @effect/sql-pg and kafkajs
 * (the peers). There, against the real PostgreSQL and Kafka: `outbox-relay/writer` writes in the
 * service's transaction, the installed `outbox-relay` bin migrates and relays, and
 * `outbox-relay/consumer` handles the event once and skips a redelivered duplicate.
 *
 * npm installs with --prefer-offline: every package is in the npm cache since `npm ci` of this
 * repository, so the registry is asked only for what is missing.
 */
import { type ExecFileException, execFile, spawn } from "node:child_process"
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import path from "node:path"
import { fileURLToPath } from "node:url"
import { Effect, Schedule } from "effect"
import { SqlClient } from "effect/sql"
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest"
import { Kafka } from "../../src/kafka/kafkajs.ts"
import { readTopics } from "../support/kafka-reader.ts"
import { sqlLayer, testDatabase } from "../support/test-database.ts"

const ROOT = fileURLToPath(new URL("../../", import.meta.url))
const PATCH_MARKER = "/* outbox-relay patch */"
const PEERS = ["effect", "@effect/sql-pg", "kafkajs"] as const

interface Run {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

// npm exports its configuration to scripts as npm_* variables (the outer `npm test`'s prefix,
// among others); the scratch project's npm must see only its own.
const cleanEnv = (extra: Record<string, string> = {}): Record<string, string> => {
  const env: Record<string, string> = {}
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.toLowerCase().startsWith("npm_")) env[k] = v
  return { ...env, ...extra }
}

const run = (file: string, args: ReadonlyArray<string>, cwd: string, env: Record<string, string> = {}, timeout = 120_000) =>
  new Promise<Run>((resolve) => {
    execFile(
      file,
      [...args],
      { cwd, env: cleanEnv(env), timeout, maxBuffer: 16 << 20 },
      (error: ExecFileException | null, stdout, stderr) =>
        resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : -1, stdout, stderr }),
    )
  })

const ok = (r: Run, what: string): Run => {
  if (r.code !== 0) throw new Error(`${what} exited ${r.code}:\n${r.stdout}\n${r.stderr}`)
  return r
}

/** The service's answer: its RESULT line (the libraries' own log lines go to stdout too). */
const resultOf = (r: Run): unknown => {
  const line = r.stdout.split("\n").find((l) => l.startsWith("RESULT "))
  if (line === undefined) throw new Error(`no RESULT line in:\n${r.stdout}\n${r.stderr}`)
  return JSON.parse(line.slice("RESULT ".length))
}

const versionOf = (name: string): string =>
  (JSON.parse(readFileSync(path.join(ROOT, "node_modules", name, "package.json"), "utf8")) as { version: string }).version

/** The user's service: plain Node 22 runs it (types stripped); its imports are the installed package's exports. */
const SERVICE = `
import { PgClient } from "@effect/sql-pg"
import { Console, Effect, Redacted, Schedule, Schema } from "effect"
import { SqlClient } from "effect/sql"
import { ensureInboxTable, makeIdempotentConsumer } from "outbox-relay/consumer"
import { type WriteResult, writeEvent } from "outbox-relay/writer"

const [mode = "", databaseUrl = "", dedupKey = "", brokers = "", topic = ""] = process.argv.slice(2)

const event = (key: string) => ({ eventType: "order_paid", dedupKey: key, aggregateKey: dedupKey, payload: { orderId: dedupKey } })

const write = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  yield* sql\`CREATE TABLE IF NOT EXISTS orders (id text PRIMARY KEY, status text NOT NULL)\`
  const first: WriteResult = yield* sql.withTransaction(
    Effect.gen(function* () {
      yield* sql\`INSERT INTO orders (id, status) VALUES (\${dedupKey}, 'paid')\`
      return yield* writeEvent(event(dedupKey))
    }),
  )
  const again: WriteResult = yield* sql.withTransaction(writeEvent(event(dedupKey)))
  // A transaction that fails takes its event with it.
  const failed = yield* sql
    .withTransaction(Effect.gen(function* () {
      yield* writeEvent(event(\`\${dedupKey}-rolled-back\`))
      return yield* Effect.fail("payment declined")
    }))
    .pipe(Effect.flip)
  return { first: first._tag, again: again._tag, failed }
})

const consume = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  yield* ensureInboxTable
  yield* sql\`CREATE TABLE IF NOT EXISTS handled (dedup_key text NOT NULL, order_id text NOT NULL)\`
  const consumer = yield* makeIdempotentConsumer({
    groupId: \`scratch-\${dedupKey}\`,
    topics: [topic],
    fromBeginning: true,
    kafka: { clientId: "scratch-service", brokers: brokers.split(",") },
    payload: Schema.Struct({ orderId: Schema.String }),
    handler: (e) => sql\`INSERT INTO handled (dedup_key, order_id) VALUES (\${e.dedupKey}, \${e.payload.orderId})\`.pipe(Effect.asVoid),
  })
  // Both deliveries (the relayed record and its redelivery) accounted for.
  const stats = yield* consumer.stats.pipe(
    Effect.repeat({ schedule: Schedule.spaced("100 millis"), until: (s) => s.processed + s.duplicates >= 2 }),
    Effect.timeout("60 seconds"),
  )
  return { processed: stats.processed, duplicates: stats.duplicates }
}).pipe(Effect.scoped)

const program: Effect.Effect<object, unknown, SqlClient.SqlClient> = mode === "write" ? write : consume
Effect.runPromise(program.pipe(
  Effect.flatMap((result) => Console.log(\`RESULT \${JSON.stringify(result)}\`)),
  Effect.provide(PgClient.layer({ url: Redacted.make(databaseUrl) })),
)).then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error)
    process.exit(1)
  },
)
`

describe("the packed package installed into a user's project", () => {
  let scratch = ""
  let tarball = ""
  let install: Run = { code: -1, stdout: "", stderr: "" }
  const installed = (...parts: ReadonlyArray<string>) => path.join(scratch, "node_modules", ...parts)
  const bin = () => installed(".bin", "outbox-relay")

  beforeAll(async () => {
    scratch = mkdtempSync(path.join(tmpdir(), "outbox-relay-installed-"))
    // prepack builds dist/ (scripts/build-lib.sh) before the tarball is made.
    const pack = ok(await run("npm", ["pack", "--json", "--pack-destination", scratch], ROOT), "npm pack")
    const [packed] = JSON.parse(pack.stdout.slice(pack.stdout.indexOf("["))) as ReadonlyArray<{ filename: string }>
    tarball = path.join(scratch, packed?.filename ?? "")
    writeFileSync(
      path.join(scratch, "package.json"),
      JSON.stringify({
        name: "scratch-service",
        private: true,
        type: "module",
        dependencies: { "outbox-relay": `file:./${path.basename(tarball)}`, ...Object.fromEntries(PEERS.map((p) => [p, versionOf(p)])) },
      }),
    )
    writeFileSync(path.join(scratch, "service.ts"), SERVICE)
    // --foreground-scripts: npm shows what the package's postinstall printed.
    install = ok(
      await run("npm", ["install", "--prefer-offline", "--no-audit", "--no-fund", "--foreground-scripts"], scratch, {}, 240_000),
      "npm install",
    )
  }, 300_000)

  afterAll(() => {
    if (scratch !== "") rmSync(scratch, { recursive: true, force: true })
  })

  it("ships the built entry points and the bin, and shares the service's effect, @effect/sql-pg and kafkajs", async () => {
    const listing = ok(await run("tar", ["-tzf", tarball], scratch), "tar").stdout.split("\n")
    for (const file of [
      "dist/writer.js",
      "dist/writer.d.ts",
      "dist/consumer.js",
      "dist/consumer.d.ts",
      "dist/cli/main.js",
      "bin/outbox-relay",
    ]) {
      expect(listing, file).toContain(`package/${file}`)
    }
    expect(listing.filter((f) => f.startsWith("package/test/") || f.startsWith("package/node_modules/"))).toEqual([])
    const manifest = JSON.parse(readFileSync(installed("outbox-relay", "package.json"), "utf8")) as Record<string, unknown>
    expect(manifest.private).toBeUndefined()
    expect(Object.keys(manifest.peerDependencies as object).sort()).toEqual([...PEERS].sort())
    // One copy of each peer, the service's own: none nested under outbox-relay.
    for (const peer of PEERS) expect(existsSync(installed("outbox-relay", "node_modules", peer)), peer).toBe(false)
  })

  it("type-checks a service against the exported .d.ts files", async () => {
    writeFileSync(
      path.join(scratch, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          strict: true,
          module: "NodeNext",
          moduleResolution: "NodeNext",
          target: "ES2022",
          lib: ["ES2023", "DOM"],
          noEmit: true,
          allowImportingTsExtensions: true,
          skipLibCheck: true,
          types: ["node"],
        },
        files: ["service.ts"],
      }),
    )
    const tsc = await run(path.join(ROOT, "node_modules", ".bin", "tsc"), ["-p", "tsconfig.json"], scratch)
    expect(tsc.code, `${tsc.stdout}${tsc.stderr}`).toBe(0)
  })

  it("leaves the service's own kafkajs unpatched at install and says so; patches it only when asked", async () => {
    const encoder = installed("kafkajs", "src", "protocol", "encoder.js")
    expect(install.stdout).toContain(
      `kafkajs ${versionOf("kafkajs")} at ${installed("kafkajs")} is your project's own copy, left unpatched`,
    )
    expect(install.stdout).not.toMatch(/patch-kafkajs: patched/)
    expect(readFileSync(encoder, "utf8").startsWith(PATCH_MARKER)).toBe(false)

    const script = installed("outbox-relay", "scripts", "patch-kafkajs.mjs")
    const asked = ok(await run(process.execPath, [script], scratch, { OUTBOX_RELAY_PATCH_KAFKAJS: "1" }), "patch-kafkajs")
    expect(asked.stdout).toContain(`patched 3 file(s) of kafkajs ${versionOf("kafkajs")} at ${installed("kafkajs")}`)
    expect(readFileSync(encoder, "utf8").startsWith(PATCH_MARKER)).toBe(true)
  })

  it("runs the installed bin: --help lists the commands, migrate prepares a fresh database", async () => {
    const help = ok(await run(bin(), ["--help"], scratch), "outbox-relay --help")
    for (const command of ["run", "migrate", "demo"]) expect(help.stdout).toContain(command)
    await Effect.runPromise(
      Effect.scoped(
        Effect.gen(function* () {
          const db = yield* testDatabase({ migrated: false })
          const migrate = yield* Effect.promise(() => run(bin(), ["migrate"], scratch, { DATABASE_URL: db.url }))
          expect(migrate.code, `${migrate.stdout}${migrate.stderr}`).toBe(0)
          const [table] = yield* Effect.gen(function* () {
            const sql = yield* SqlClient.SqlClient
            return yield* sql<{ exists: boolean }>`SELECT to_regclass('outbox_event') IS NOT NULL AS exists`
          }).pipe(Effect.provide(sqlLayer(db.url)))
          expect(table?.exists).toBe(true)
        }),
      ),
    )
  })

  it("writes in the service's transaction, relays with the installed bin, consumes once and skips a redelivered duplicate", async () => {
    const brokers = inject("kafkaBrokers")
    const suffix = path.basename(scratch).replace(/[^a-zA-Z0-9]/g, "")
    const topic = `test-installed-${suffix}`
    const dedupKey = `order-${suffix}`
    await Effect.runPromise(
      Effect.scoped(
        Effect.gen(function* () {
          const db = yield* testDatabase({ migrated: false })
          const node = process.execPath
          const query = <A extends object>(text: string) =>
            Effect.gen(function* () {
              const sql = yield* SqlClient.SqlClient
              return yield* sql.unsafe<A>(text)
            }).pipe(Effect.provide(sqlLayer(db.url)), Effect.orDie)
          ok(yield* Effect.promise(() => run(bin(), ["migrate"], scratch, { DATABASE_URL: db.url })), "migrate")

          const written = ok(yield* Effect.promise(() => run(node, ["service.ts", "write", db.url, dedupKey], scratch)), "service write")
          expect(resultOf(written)).toEqual({ first: "Inserted", again: "Duplicate", failed: "payment declined" })
          expect(yield* query<{ dedup_key: string }>("SELECT dedup_key FROM outbox_event")).toEqual([{ dedup_key: dedupKey }])

          // The relay: the installed bin as its own process, stopped by SIGTERM once the row is SENT.
          const relay = spawn(bin(), ["run"], {
            cwd: scratch,
            env: cleanEnv({
              DATABASE_URL: db.url,
              KAFKA_BROKERS: brokers,
              HTTP_PORT: "0",
              LOG_LEVEL: "warn",
              TOPIC_MAP: JSON.stringify({ order_paid: topic }),
            }),
            stdio: ["ignore", "pipe", "pipe"],
          })
          let relayOutput = ""
          relay.stdout.on("data", (d: Buffer) => (relayOutput += d.toString()))
          relay.stderr.on("data", (d: Buffer) => (relayOutput += d.toString()))
          const relayExit = new Promise<number | null>((resolve) => relay.on("exit", (code) => resolve(code)))
          const status = () => query<{ status: string }>("SELECT status FROM outbox_event").pipe(Effect.map((rs) => rs[0]?.status))
          const sent = yield* status().pipe(
            Effect.repeat({ schedule: Schedule.spaced("200 millis"), until: (s) => s === "SENT" }),
            Effect.timeoutOrElse({ duration: "60 seconds", orElse: () => Effect.succeed("not SENT within 60 s") }),
          )
          relay.kill("SIGTERM")
          const exitCode = yield* Effect.promise(() => relayExit)
          expect(sent, relayOutput).toBe("SENT")
          expect(exitCode, relayOutput).toBe(0)

          // Redelivery, as after a consumer crash before its offset commit: the same record again.
          const [record] = yield* readTopics([topic], { expected: 1 })
          expect(record?.headers.dedup_key).toBe(dedupKey)
          yield* Effect.promise(async () => {
            const producer = new Kafka({ clientId: "installed-package-test", brokers: brokers.split(","), logLevel: 1 }).producer()
            await producer.connect()
            await producer.send({
              topic,
              messages: [{ key: record?.key ?? null, value: record?.value ?? null, headers: { ...record?.headers } }],
            })
            await producer.disconnect()
          })

          const consumed = ok(
            yield* Effect.promise(() => run(node, ["service.ts", "consume", db.url, dedupKey, brokers, topic], scratch)),
            "service consume",
          )
          expect(resultOf(consumed), consumed.stdout).toEqual({ processed: 1, duplicates: 1 })
          expect(yield* query<{ dedup_key: string; order_id: string }>("SELECT dedup_key, order_id FROM handled")).toEqual([
            { dedup_key: dedupKey, order_id: dedupKey },
          ])
        }),
      ),
    )
  })
})
