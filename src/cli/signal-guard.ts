/**
 * Keeps a SIGTERM or SIGINT from killing the process with the signal's default action
 * (exit 143/130) while NodeRuntime.runMain has no handler of its own installed: before it
 * starts (modules still loading) and after its fiber ended (its handlers are gone while the
 * process exits). So an orchestrator's repeated SIGTERM never cuts a graceful stop short,
 * and the exit code is the program's. Imports nothing heavy: main.ts installs it first.
 */

export interface SignalGuard {
  /** The program starts (runMain's handlers are in place); true when a signal came before: stop at once. */
  readonly started: () => boolean
  /** The program's fiber ended with this exit code: a later signal exits with it. */
  readonly finished: (code: number) => void
}

export const guardSignals = (): SignalGuard => {
  let phase: "loading" | "running" | "finished" = "loading"
  let signalledEarly = false
  let exitCode = 0
  const onSignal = () => {
    if (phase === "loading") signalledEarly = true
    else if (phase === "finished") process.exit(exitCode)
    // While running, runMain's own handler interrupts the program.
  }
  // Never removed; a signal listener does not keep the process alive.
  process.on("SIGTERM", onSignal)
  process.on("SIGINT", onSignal)
  return {
    started: () => {
      phase = "running"
      return signalledEarly
    },
    finished: (code) => {
      phase = "finished"
      exitCode = code
    },
  }
}
