import { Effect } from "effect"
import { Command } from "effect/cli"
import { appLayer } from "../app-layer.ts"
import { RelayConfig } from "../config/config.ts"
import { runRelayUntilStopped } from "../relay/relay.ts"
import { reportFailures } from "./cli-failure.ts"

export const runCommand = Command.make("run", {}, () =>
  reportFailures(runRelayUntilStopped.pipe(Effect.provide(appLayer(RelayConfig.layer)))),
).pipe(
  Command.withDescription("Run the relay until SIGTERM/SIGINT. Configuration comes from environment variables; see the README's table."),
)
