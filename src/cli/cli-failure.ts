/** How a command's failure reaches the person at the terminal: one clear message and an exit code. */
import { Effect, Runtime, Schema } from "effect"
import { CliError } from "effect/cli"

export class CommandFailed extends Schema.TaggedError<CommandFailed>()("CommandFailed", {
  message: Schema.String,
  exitCode: Schema.Number,
}) {
  override get [CliError.userMessage](): string {
    return this.message
  }
  override get [Runtime.errorExitCode](): number {
    return this.exitCode
  }
}

/** Exit 2 for configuration problems (fix the input), 1 for everything else. */
export const reportFailures = <A, R>(
  effect: Effect.Effect<A, { readonly _tag: string; readonly message: string }, R>,
): Effect.Effect<A, CommandFailed, R> =>
  effect.pipe(
    Effect.mapError((e) =>
      e instanceof CommandFailed ? e : new CommandFailed({ message: e.message, exitCode: e._tag === "InvalidConfig" ? 2 : 1 }),
    ),
  )
