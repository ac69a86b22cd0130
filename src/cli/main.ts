/** `outbox-relay`: the command line. Only composes commands and launches. */
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Effect, Runtime } from "effect"
import { Command } from "effect/cli"
import { dlqCommand, replayCommand } from "./dead-letter-commands.ts"
import { demoCommand } from "./demo-command.ts"
import { migrateCommand } from "./migrate-command.ts"
import { runCommand } from "./run-command.ts"

const outboxRelay = Command.make("outbox-relay").pipe(
  Command.withDescription("Moves events from a PostgreSQL outbox table onto Apache Kafka without losing one."),
  Command.withSubcommands([runCommand, migrateCommand, dlqCommand, replayCommand, demoCommand]),
)

outboxRelay.pipe(
  Command.run({ version: "0.1.0" }),
  Effect.provide(NodeServices.layer),
  NodeRuntime.runMain({
    // A stop by signal is the normal way to end `run`: exit 0, not 130.
    teardown: (exit, onExit) => {
      if (exit._tag === "Success") return onExit(0)
      const interruptedOnly = exit.cause.reasons.every((r) => r._tag === "Interrupt")
      const failure = exit.cause.reasons.find((r) => r._tag === "Fail")
      const code = failure?._tag === "Fail" && failure.error instanceof Error ? failure.error[Runtime.errorExitCode] : undefined
      onExit(interruptedOnly ? 0 : (code ?? 1))
    },
  }),
)
