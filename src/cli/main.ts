/**
 * `outbox-relay`: the command line. The signal guard comes first, before the commands'
 * modules load (a second or so): a SIGTERM then must stop the relay, not kill it (exit 143).
 */
import { guardSignals } from "./signal-guard.ts"

const guard = guardSignals()
const { launch } = await import("./commands.ts")
launch(guard)
