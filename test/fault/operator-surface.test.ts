/**
 * The relay's operator surface against the real process, PostgreSQL and Kafka:
 * - the admin API refuses a huge body with 413 before buffering it (declared or chunked);
 * - an out-of-range replay id is a 400 (HTTP) or exit 2 (CLI), not "database unavailable";
 * - HTTP_HOST decides which address the port is bound to;
 * - two SIGTERMs in quick succession still end in a graceful stop: exit 0, no lease left;
 * - a broker that cannot be reached is logged at start and /readyz says why, while idle.
 */
import { readFileSync } from "node:fs"
import { request as httpRequest } from "node:http"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"
import { type Db, waitSent } from "../support/fault/fault-db.ts"
import { freePort, outboxRelay, sleep } from "../support/fault/processes.ts"
import type { RelayProcess } from "../support/fault/relay-process.ts"
import { Scenario, stage } from "../support/fault/scenario.ts"

const TOKEN = "operator-surface-admin-token-0123"
const SLOW_MODULE_LOAD = fileURLToPath(new URL("../support/fault/slow-module-load.ts", import.meta.url))
const MB = 1024 * 1024

/** The process' resident set size in bytes (/proc/<pid>/status VmRSS). */
const rssBytes = (pid: number): number => {
  const match = /^VmRSS:\s+(\d+)\s+kB$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))
  if (match === null) throw new Error(`no VmRSS for pid ${pid}`)
  return Number(match[1]) * 1024
}

interface HugePostResult {
  readonly status: number | undefined
  readonly body: string
  readonly bytesWritten: number
  /** Largest RSS of the relay seen while the body was being sent. */
  readonly peakRss: number
}

/**
 * POSTs `totalBytes` to the admin replay endpoint, streamed 1 MiB at a time (with or without
 * a Content-Length), and stops writing as soon as the answer comes or the socket closes.
 */
const hugePost = (port: number, pid: number, totalBytes: number, declareLength: boolean): Promise<HugePostResult> =>
  new Promise((resolve) => {
    const chunk = Buffer.alloc(MB, 0x20)
    let bytesWritten = 0
    let peakRss = rssBytes(pid)
    let status: number | undefined
    let body = ""
    let stopped = false
    let settled = false
    const finish = () => {
      if (settled) return
      settled = true
      clearInterval(sampler)
      resolve({ status, body, bytesWritten, peakRss })
    }
    const sampler = setInterval(() => {
      try {
        peakRss = Math.max(peakRss, rssBytes(pid))
      } catch {
        // the relay exited: the assertions on its answer will say so
      }
    }, 50)
    const req = httpRequest({
      host: "127.0.0.1",
      port,
      method: "POST",
      path: "/admin/replay",
      headers: {
        authorization: `Bearer ${TOKEN}`,
        "content-type": "application/json",
        ...(declareLength ? { "content-length": String(totalBytes) } : {}),
      },
    })
    req.on("response", (res) => {
      stopped = true
      status = res.statusCode
      res.setEncoding("utf8")
      res.on("data", (d: string) => {
        body += d
      })
      res.on("end", finish)
      res.on("error", finish)
    })
    req.on("error", () => {
      stopped = true
      // The relay may close the socket right after answering; the answer may still arrive.
      setTimeout(finish, 500)
    })
    req.on("close", () => {
      stopped = true
      setTimeout(finish, 500)
    })
    const pump = () => {
      while (!stopped && bytesWritten < totalBytes) {
        bytesWritten += chunk.length
        if (!req.write(chunk)) {
          req.once("drain", pump)
          return
        }
      }
      if (!stopped) req.end()
    }
    pump()
  })

/** Listening TCP sockets on `port` (IPv4 and IPv6), as "address:port" in /proc/net/tcp's hex. */
const listeningAddresses = (port: number): ReadonlyArray<string> => {
  const hexPort = port.toString(16).toUpperCase().padStart(4, "0")
  const lines = ["/proc/net/tcp", "/proc/net/tcp6"].flatMap((f) => readFileSync(f, "utf8").split("\n").slice(1))
  return lines
    .map((l) => l.trim().split(/\s+/))
    .filter((cols) => cols.length > 3 && cols[3] === "0A" && cols[1]!.endsWith(`:${hexPort}`))
    .map((cols) => cols[1]!)
}

const httpGet = async (url: string): Promise<{ status: number; body: Record<string, unknown> }> => {
  const response = await fetch(url, { signal: AbortSignal.timeout(15_000) })
  return { status: response.status, body: (await response.json()) as Record<string, unknown> }
}

/** POSTs `body` (a JSON text as given, so that numbers past 2^53 reach the relay digit for digit). */
const postJson = async (url: string, body: string): Promise<{ status: number; body: Record<string, unknown> }> => {
  const response = await fetch(url, {
    method: "POST",
    headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
    body,
    signal: AbortSignal.timeout(15_000),
  })
  return { status: response.status, body: (await response.json()) as Record<string, unknown> }
}

const insertBacklog = (db: Db, prefix: string, n: number) =>
  db.run(
    (sql) => sql`
      INSERT INTO outbox_event (dedup_key, event_type, aggregate_key, payload)
      SELECT ${prefix} || '-' || i, 'search_click', 'key-' || (i % 24), jsonb_build_object('n', i)
        FROM generate_series(1, ${n}::int) AS i`,
  )

const waitForOutput = async (relay: RelayProcess, text: string, timeoutMs: number) => {
  const deadline = Date.now() + timeoutMs
  while (!relay.output.some((l) => l.includes(text))) {
    if (!relay.running || Date.now() > deadline) throw new Error(`${relay.name} did not print "${text}"`)
    await sleep(10)
  }
}

const startWithPort = async (s: Scenario, name: string, env: Readonly<Record<string, string>>) => {
  const port = await freePort()
  const relay: RelayProcess = s.startRelay(name, { ...env, HTTP_PORT: String(port) })
  return { relay, port, baseUrl: `http://127.0.0.1:${port}` }
}

describe("operator surface", () => {
  it("refuses a 300 MB admin POST with 413, declared or chunked, without buffering it (RSS grows by less than 50 MB)", async () => {
    const s = new Scenario("admin body limit")
    const st = await stage(s, { label: "bodylimit" })
    const { relay, port, baseUrl } = await startWithPort(s, "surface-body", { ...st.relayEnv, ADMIN_TOKEN: TOKEN })
    await relay.ready()

    for (const declareLength of [true, false]) {
      const before = rssBytes(relay.pid)
      const answer = await hugePost(port, relay.pid, 300 * MB, declareLength)
      const after = rssBytes(relay.pid)
      console.log(
        `[operator surface] 300 MB POST (${declareLength ? "Content-Length" : "chunked"}): status ${answer.status}, ` +
          `RSS before ${(before / MB).toFixed(0)} MB, peak ${(answer.peakRss / MB).toFixed(0)} MB, after ${(after / MB).toFixed(0)} MB, ` +
          `client wrote ${(answer.bytesWritten / MB).toFixed(0)} MB`,
      )
      expect(answer.status, answer.body).toBe(413)
      expect(JSON.parse(answer.body)).toMatchObject({ error: "payload_too_large" })
      expect(answer.peakRss - before, "RSS growth while the body was sent").toBeLessThan(50 * MB)
      expect(relay.running).toBe(true)
    }
    // Still serving, and a small body still works.
    const small = await postJson(`${baseUrl}/admin/replay`, '{"all":true,"dry_run":true}')
    expect(small.status).toBe(200)
  }, 180_000)

  it("answers a replay id above the 64-bit range with 400 (HTTP) and exit 2 (CLI), not 'database unavailable'", async () => {
    const s = new Scenario("replay id range")
    const st = await stage(s, { label: "idrange" })
    const { relay, baseUrl } = await startWithPort(s, "surface-ids", { ...st.relayEnv, ADMIN_TOKEN: TOKEN })
    await relay.ready()

    for (const ids of ['["9223372036854775808"]', '["9999999999999999999"]', '["99999999999999999999"]', "[9223372036854775808]"]) {
      const answer = await postJson(`${baseUrl}/admin/replay`, `{"ids":${ids}}`)
      expect(answer.status, ids).toBe(400)
      expect(answer.body).toMatchObject({ error: "bad_request" })
      expect(String(answer.body.message), ids).toContain("ids")
    }
    // The largest bigint is a valid id: no such row, nothing replayed.
    const largest = await postJson(`${baseUrl}/admin/replay`, '{"ids":["9223372036854775807"],"dry_run":true}')
    expect(largest.status).toBe(200)
    expect(largest.body).toMatchObject({ count: 0 })

    for (const id of ["9223372036854775808", "abc", "0"]) {
      const cli = await outboxRelay(["replay", "--id", id, "--dry-run"], { DATABASE_URL: st.relayEnv.DATABASE_URL! })
      expect(cli.code, `replay --id ${id}: ${cli.output}`).toBe(2)
      expect(cli.output, id).toContain("--id")
      expect(cli.output).not.toMatch(/database/i)
    }
    const cliOk = await outboxRelay(["replay", "--id", "9223372036854775807", "--dry-run"], { DATABASE_URL: st.relayEnv.DATABASE_URL! })
    expect(cliOk.code, cliOk.output).toBe(0)
  }, 120_000)

  it("binds the HTTP port to HTTP_HOST, and to every interface when it is not set", async () => {
    const s = new Scenario("http host")
    const st = await stage(s, { label: "httphost" })
    const local = await startWithPort(s, "surface-local", { ...st.relayEnv, HTTP_HOST: "127.0.0.1" })
    const any = await startWithPort(s, "surface-any", st.relayEnv)
    await Promise.all([local.relay.ready(), any.relay.ready()])

    expect(listeningAddresses(local.port)).toEqual([`0100007F:${local.port.toString(16).toUpperCase().padStart(4, "0")}`])
    expect((await httpGet(`${local.baseUrl}/healthz`)).status).toBe(200)
    // Unset: the wildcard address (IPv6 "::" also takes IPv4), as the container image needs.
    const anyAddresses = listeningAddresses(any.port)
    expect(anyAddresses.length).toBeGreaterThan(0)
    for (const address of anyAddresses) expect(address).toMatch(/^0+:/)
    expect((await httpGet(`${any.baseUrl}/healthz`)).status).toBe(200)
  }, 120_000)

  it("exits 0 on two SIGTERMs 50 ms apart, while starting and while relaying a backlog, after releasing every lease", async () => {
    const s = new Scenario("double SIGTERM")
    const st = await stage(s, { label: "sigterm2" })
    await insertBacklog(st.db, "sigterm2", 20_000)
    const twoSigterms = async (relay: RelayProcess) => {
      relay.kill("SIGTERM")
      await sleep(50)
      relay.kill("SIGTERM")
      const timer = setTimeout(() => relay.kill("SIGKILL"), 20_000)
      const exit = await relay.exited
      clearTimeout(timer)
      return exit
    }

    // While its libraries still load (held back, as on a loaded machine, where that took seconds):
    // the Effect runtime has no signal handler yet.
    const starting = s.startRelay("surface-sigterm-starting", { ...st.relayEnv, NODE_OPTIONS: `--import=${SLOW_MODULE_LOAD}` })
    await waitForOutput(starting, "slow-module-load: holding node_modules", 30_000)
    const startingExit = await twoSigterms(starting)
    console.log(`[operator surface] double SIGTERM while starting: exit ${JSON.stringify(startingExit)}`)
    expect(startingExit).toEqual({ code: 0, signal: null })
    expect(starting.linesWith("relay started")).toEqual([])

    const relay = s.startRelay("surface-sigterm", { ...st.relayEnv, BATCH_SIZE: "500" })
    await relay.ready()
    await waitSent(st.db, 500, 30_000)
    const exit = await twoSigterms(relay)

    const [row] = await st.db.run(
      (sql) => sql<{ leased: number; pending: number }>`
        SELECT count(*) FILTER (WHERE locked_by IS NOT NULL)::int AS leased, count(*)::int AS pending
          FROM outbox_event WHERE status IN ('NEW', 'FAILED')`,
    )
    console.log(`[operator surface] double SIGTERM: exit ${JSON.stringify(exit)}, ${row?.pending} rows left pending, ${row?.leased} leased`)
    expect(exit).toEqual({ code: 0, signal: null })
    expect(row?.pending, "the backlog was still being relayed at the signals").toBeGreaterThan(0)
    expect(row?.leased).toBe(0)
  }, 120_000)

  it("logs an unresolvable broker at start and /readyz answers 503 naming the Kafka problem, with nothing to send", async () => {
    const s = new Scenario("broker unreachable")
    const st = await stage(s, { label: "nobroker" })
    const { relay, baseUrl } = await startWithPort(s, "surface-nobroker", {
      ...st.relayEnv,
      KAFKA_BROKERS: "does-not-exist.invalid:9092",
      READY_TIMEOUT_MS: "3000",
    })
    const startedAt = Date.now()
    const line = await relay.waitForLog("Kafka is not reachable", 8_000)
    console.log(`[operator surface] unreachable broker logged after ${Date.now() - startedAt} ms: ${JSON.stringify(line)}`)
    expect(line.level).toBe("error")
    expect(JSON.stringify(line)).toContain("does-not-exist.invalid")

    const ready = await httpGet(`${baseUrl}/readyz`)
    expect(ready.status).toBe(503)
    const kafka = (ready.body.checks as { kafka: { ok: boolean; error?: string } }).kafka
    expect(kafka.ok).toBe(false)
    expect(kafka.error).toMatch(/does-not-exist\.invalid|ENOTFOUND|getaddrinfo/)
    expect(relay.running).toBe(true)
  }, 60_000)
})
