import { Effect } from "effect"
import { Command } from "effect/cli"
import { runLayer } from "../app-layer.ts"
import { RelayConfig } from "../config/config.ts"
import { runRelayUntilStopped } from "../relay/relay.ts"
import { reportFailures } from "./cli-failure.ts"

export const runCommand = Command.make("run", {}, () =>
  reportFailures(runRelayUntilStopped.pipe(Effect.provide(runLayer(RelayConfig.layer)))),
).pipe(
  Command.withDescription(
    "Run the relay until SIGTERM/SIGINT, serving /healthz, /readyz, /metrics and the admin API on HTTP_PORT. Configuration comes from environment variables; see the README's table.",
  ),
)
