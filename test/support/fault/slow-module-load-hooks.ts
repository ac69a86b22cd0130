/** Module hooks of slow-module-load.ts (they run on Node's loader thread). */
import { writeSync } from "node:fs"

let holdMs = 0
let held = false

export const initialize = (data: { readonly holdMs: number }): void => {
  holdMs = data.holdMs
}

type NextLoad = (url: string, context: unknown) => Promise<unknown>

export const load = async (url: string, context: unknown, nextLoad: NextLoad): Promise<unknown> => {
  if (!held && url.includes("/node_modules/")) {
    held = true
    // Straight to fd 2: the loader thread's console is forwarded late, if at all.
    writeSync(2, `slow-module-load: holding node_modules for ${holdMs} ms\n`)
    await new Promise((resolve) => setTimeout(resolve, holdMs))
  }
  return nextLoad(url, context)
}
