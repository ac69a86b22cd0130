/** GET /metrics: the Prometheus scrape, on the relay's own HTTP port. */
import { Effect } from "effect"
import { HttpRouter, HttpServerResponse } from "effect/http"
import { PROMETHEUS_CONTENT_TYPE, PrometheusScrape } from "../telemetry/prometheus.ts"
import { respond, unavailable } from "./responses.ts"

export const MetricsRoute = HttpRouter.use((router) =>
  Effect.gen(function* () {
    const scrape = yield* PrometheusScrape
    yield* router.add(
      "GET",
      "/metrics",
      respond(
        scrape.render.pipe(
          Effect.map((text) => HttpServerResponse.text(text, { contentType: PROMETHEUS_CONTENT_TYPE })),
          Effect.mapError((e) => unavailable(e.message)),
        ),
      ),
    )
  }),
)
