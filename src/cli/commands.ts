/** The `outbox-relay` commands, composed and launched (main.ts loads this behind its signal guard). */
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Effect, type Exit, Runtime } from "effect"
import { Command } from "effect/cli"
import { dlqCommand, replayCommand } from "./dead-letter-commands.ts"
import { demoCommand } from "./demo-command.ts"
import { migrateCommand } from "./migrate-command.ts"
import { runCommand } from "./run-command.ts"
import type { SignalGuard } from "./signal-guard.ts"
import { stuckCommand, unstickCommand } from "./stuck-commands.ts"

const outboxRelay = Command.make("outbox-relay").pipe(
  Command.withDescription("Moves events from a PostgreSQL outbox table onto Apache Kafka without losing one."),
  Command.withSubcommands([runCommand, migrateCommand, dlqCommand, replayCommand, stuckCommand, unstickCommand, demoCommand]),
)

/** A stop by signal is the normal way to end `run`: exit 0, not 130. A command's failure gives its own code, else 1. */
const exitCode = (exit: Exit.Exit<unknown, unknown>): number => {
  if (exit._tag === "Success") return 0
  const interruptedOnly = exit.cause.reasons.every((r) => r._tag === "Interrupt")
  const failure = exit.cause.reasons.find((r) => r._tag === "Fail")
  const code = failure?._tag === "Fail" && failure.error instanceof Error ? failure.error[Runtime.errorExitCode] : undefined
  return interruptedOnly ? 0 : (code ?? 1)
}

export const launch = (guard: SignalGuard): void =>
  // Inside the main fiber runMain's signal handlers are in place; a signal that came while
  // the modules loaded stops the program before it starts anything.
  Effect.suspend(() => (guard.started() ? Effect.interrupt : Command.run(outboxRelay, { version: "0.1.0" }))).pipe(
    Effect.provide(NodeServices.layer),
    NodeRuntime.runMain({
      teardown: (exit, onExit) => {
        const code = exitCode(exit)
        guard.finished(code)
        onExit(code)
      },
    }),
  )
