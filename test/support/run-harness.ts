/**
 * The whole `outbox-relay run` stack in this process: the relay loop plus telemetry,
 * the HTTP API and the backlog gauges (src/app-layer.ts runLayer), on a free port.
 * Tests talk to it over real HTTP, like a probe, a scraper or an operator would.
 */
import { execFile } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { Context, Effect, Layer, Schedule } from "effect"
import { HttpServer } from "effect/http"
import { runLayer } from "../../src/app-layer.ts"
import { RelayConfig, type RelayConfigShape } from "../../src/config/config.ts"
import { runRelay } from "../../src/relay/relay.ts"
import { RelayEvents } from "../../src/relay/relay-events.ts"

export interface RunningRelay {
  readonly baseUrl: string
  /** What the loop does, to wait on instead of sleeping. */
  readonly events: RelayEvents["Service"]
}

/** Starts the stack for the rest of the test's scope (HTTP_PORT is forced to 0: any free port). */
export const startRun = (config: RelayConfigShape) =>
  Effect.gen(function* () {
    const context = yield* Layer.build(runLayer(Layer.succeed(RelayConfig, { ...config, httpPort: 0 })))
    const address = Context.get(context, HttpServer.HttpServer).address
    if (address._tag === "UnixPathAddress") throw new Error("expected a TCP address")
    yield* Effect.forkScoped(runRelay.pipe(Effect.provideContext(context)))
    return { baseUrl: `http://127.0.0.1:${address.port}`, events: Context.get(context, RelayEvents) } satisfies RunningRelay
  })

export interface HttpAnswer {
  readonly status: number
  readonly headers: Headers
  readonly text: string
  /** The body parsed as JSON (undefined when it is not JSON). */
  readonly body: unknown
}

/** One real HTTP request. */
export const request = (url: string, init: RequestInit = {}): Effect.Effect<HttpAnswer> =>
  Effect.promise(async () => {
    const response = await fetch(url, { ...init, signal: AbortSignal.timeout(15_000) })
    const text = await response.text()
    let body: unknown
    try {
      body = JSON.parse(text)
    } catch {
      body = undefined
    }
    return { status: response.status, headers: response.headers, text, body }
  })

/** Repeats `effect` until `done` holds for its result, or fails the test after `timeoutMs`. */
export const eventually = <A, E, R>(effect: Effect.Effect<A, E, R>, done: (a: A) => boolean, timeoutMs: number, what: string) =>
  effect.pipe(
    Effect.repeat({ schedule: Schedule.spaced("200 millis"), until: done }),
    Effect.timeoutOrElse({ duration: timeoutMs, orElse: () => Effect.die(new Error(`not within ${timeoutMs} ms: ${what}`)) }),
  )

const KAFKA_SH = fileURLToPath(new URL("../../scripts/kafka.sh", import.meta.url))

const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const server = createServer()
    server.on("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      server.close(() => resolve(typeof address === "object" && address !== null ? address.port : 0))
    })
  })

const kafkaSh = (args: ReadonlyArray<string>) =>
  Effect.callback<void>((resume) => {
    execFile("bash", [KAFKA_SH, ...args], { maxBuffer: 1 << 22 }, (error, _stdout, stderr) =>
      resume(error === null ? Effect.void : Effect.die(new Error(`kafka.sh ${args.join(" ")} failed:\n${stderr.slice(-3000)}`))),
    )
  })

export interface OwnBroker {
  readonly bootstrap: string
  readonly stop: Effect.Effect<void>
  readonly start: Effect.Effect<void>
}

/** A broker of this test's own (scripts/kafka.sh), which it may stop and start; removed with the scope. */
export const ownBroker = Effect.acquireRelease(
  Effect.gen(function* () {
    const dir = mkdtempSync(join(tmpdir(), "outbox-obs-kafka-"))
    const port = yield* Effect.promise(freePort)
    const controllerPort = yield* Effect.promise(freePort)
    const start = kafkaSh(["start", "--dir", dir, "--port", String(port), "--controller-port", String(controllerPort)])
    yield* start
    return { dir, bootstrap: `127.0.0.1:${port}`, start, stop: kafkaSh(["stop", "--dir", dir]) }
  }),
  ({ dir, stop }) => Effect.exit(stop).pipe(Effect.ensuring(Effect.sync(() => rmSync(dir, { recursive: true, force: true })))),
)
