/**
 * A real tracing backend for tests: Zipkin server (scripts/zipkin.sh, the jar from Maven
 * Central) on a free port, its query API, and tracer layers that export a test's own
 * services (a writer, a consumer) to it the way a user's services would.
 */
import { execFile } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import { ZipkinExporter } from "@opentelemetry/exporter-zipkin"
import { SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base"
import { Effect } from "effect"
import { WholeMicrosecondsExporter } from "../../src/telemetry/zipkin-timestamps.ts"

const ZIPKIN_SH = fileURLToPath(new URL("../../scripts/zipkin.sh", import.meta.url))

/** A span as Zipkin's v2 API returns it. */
export interface ZipkinSpan {
  readonly traceId: string
  readonly id: string
  readonly parentId?: string
  readonly name?: string
  readonly kind?: "CLIENT" | "SERVER" | "PRODUCER" | "CONSUMER"
  readonly localEndpoint?: { readonly serviceName?: string }
  readonly remoteEndpoint?: { readonly serviceName?: string; readonly ipv4?: string; readonly port?: number }
  readonly tags?: Readonly<Record<string, string>>
}

export const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const server = createServer()
    server.on("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      server.close(() => resolve(typeof address === "object" && address !== null ? address.port : 0))
    })
  })

const zipkinSh = (args: ReadonlyArray<string>) =>
  Effect.callback<void>((resume) => {
    execFile("bash", [ZIPKIN_SH, ...args], { maxBuffer: 1 << 22 }, (error, _stdout, stderr) =>
      resume(error === null ? Effect.void : Effect.die(new Error(`zipkin.sh ${args.join(" ")} failed:\n${stderr.slice(-3000)}`))),
    )
  })

export interface ZipkinServer {
  /** Where exporters POST spans (OTEL_EXPORTER_ZIPKIN_ENDPOINT). */
  readonly spansUrl: string
  readonly baseUrl: string
}

/** Zipkin for the rest of the scope; stopped and its folder removed after. */
export const zipkinServer = Effect.acquireRelease(
  Effect.gen(function* () {
    const dir = mkdtempSync(join(tmpdir(), "outbox-zipkin-"))
    const port = yield* Effect.promise(freePort)
    yield* zipkinSh(["start", "--dir", dir, "--port", String(port)])
    const baseUrl = `http://127.0.0.1:${port}`
    return { dir, baseUrl, spansUrl: `${baseUrl}/api/v2/spans` }
  }),
  ({ dir }) =>
    Effect.exit(zipkinSh(["stop", "--dir", dir])).pipe(Effect.ensuring(Effect.sync(() => rmSync(dir, { recursive: true, force: true })))),
)

/** GET /api/v2/traces?annotationQuery=…: every trace with a span tagged so, as the UI's search finds them. */
export const tracesTagged = (zipkin: ZipkinServer, tag: string): Effect.Effect<ReadonlyArray<ReadonlyArray<ZipkinSpan>>> =>
  Effect.promise(async () => {
    const url = `${zipkin.baseUrl}/api/v2/traces?annotationQuery=${encodeURIComponent(tag)}&lookback=3600000&limit=100`
    const response = await fetch(url, { signal: AbortSignal.timeout(15_000) })
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status} ${await response.text()}`)
    return (await response.json()) as ReadonlyArray<ReadonlyArray<ZipkinSpan>>
  })

/** GET /api/v2/trace/{id}: the whole trace. */
export const traceById = (zipkin: ZipkinServer, traceId: string): Effect.Effect<ReadonlyArray<ZipkinSpan>> =>
  Effect.promise(async () => {
    const response = await fetch(`${zipkin.baseUrl}/api/v2/trace/${traceId}`, { signal: AbortSignal.timeout(15_000) })
    return response.ok ? ((await response.json()) as ReadonlyArray<ZipkinSpan>) : []
  })

/**
 * A service's tracer exporting each span to Zipkin as it ends (no batching: tests read them
 * back at once). Effect's spans need their start rounded to whole microseconds for Zipkin.
 */
export const zipkinTracer = (zipkin: ZipkinServer, serviceName: string) =>
  NodeSdk.layer(() => ({
    resource: { serviceName },
    spanProcessor: new SimpleSpanProcessor(new WholeMicrosecondsExporter(new ZipkinExporter({ url: zipkin.spansUrl }))),
    shutdownTimeout: "5 seconds",
  }))
