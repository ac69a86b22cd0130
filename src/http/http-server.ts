/**
 * The relay's one HTTP port (HTTP_PORT, on HTTP_HOST): health, readiness, metrics and the
 * admin API. Requests are not logged one by one (probes and scrapes come every few seconds);
 * admin actions log themselves. Probe and scrape requests make no spans. No request body
 * over MAX_BODY_BYTES is read (body-limit.ts).
 */
import { createServer } from "node:http"
import { NodeHttpServer } from "@effect/platform-node"
import { Effect, Layer, Schema } from "effect"
import { HttpMiddleware, HttpRouter, HttpServer } from "effect/http"
import { RelayConfig } from "../config/config.ts"
import { AdminRoutes } from "./admin-routes.ts"
import { BodyLimit } from "./body-limit.ts"
import { HealthRoutes } from "./health-routes.ts"
import { MetricsRoute } from "./metrics-route.ts"
import { json } from "./responses.ts"

/** Anything no route matched, including a known path with the wrong method. */
const NotFound = HttpRouter.add("*", "/*", json({ error: "not_found", message: "no such endpoint" }, 404))

/** The port is taken or not ours to bind: say which, instead of a bare "an error occurred". */
export class HttpListenFailed extends Schema.TaggedError<HttpListenFailed>()("HttpListenFailed", {
  message: Schema.String,
  cause: Schema.Defect(),
}) {}

const NodeServerLive = Layer.unwrap(
  RelayConfig.useSync((config) =>
    Layer.mergeAll(
      Layer.effect(
        HttpServer.HttpServer,
        // A short drain on stop: a scrape or probe in flight is not worth holding SIGTERM up for.
        // No host: Node's own default, every interface (IPv6 and IPv4), which a container needs.
        NodeHttpServer.make(createServer, {
          port: config.httpPort,
          ...(config.httpHost === undefined ? {} : { host: config.httpHost }),
          gracefulShutdownTimeout: "3 seconds",
        }).pipe(
          Effect.mapError(
            (e) =>
              new HttpListenFailed({
                message: `cannot serve HTTP on ${config.httpHost === undefined ? "" : `HTTP_HOST=${config.httpHost} `}HTTP_PORT=${config.httpPort}: ${e.cause instanceof Error ? e.cause.message : String(e.cause)}`,
                cause: e.cause,
              }),
          ),
        ),
      ),
      NodeHttpServer.layerHttpServices,
    ),
  ),
)

export const HttpApiLive = HttpRouter.serve(Layer.mergeAll(HealthRoutes, MetricsRoute, AdminRoutes, NotFound, BodyLimit), {
  disableLogger: true,
}).pipe(
  Layer.provide(HttpMiddleware.layerTracerDisabledForUrls(["/healthz", "/readyz", "/metrics"])),
  // HttpServer stays visible to the caller: its address says which port HTTP_PORT=0 got.
  Layer.provideMerge(NodeServerLive),
)
