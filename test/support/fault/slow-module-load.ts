/**
 * `node --import` this file to stretch a process' module loading, as on a loaded machine:
 * the first module loaded from node_modules is held back HOLD_MODULES_MS (default 3000)
 * after the line "slow-module-load: holding node_modules" on stderr. Lets a test signal a
 * process at a known point of its start (its own code running, its libraries not loaded).
 */
import { register } from "node:module"

register(new URL("./slow-module-load-hooks.ts", import.meta.url), { data: { holdMs: Number(process.env.HOLD_MODULES_MS ?? 3000) } })
