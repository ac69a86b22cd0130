/**
 * promtool checks the metrics scrape and the alert rules. scripts/promtool.sh finds it, or
 * fetches the binary of Debian's `prometheus` package into ~/.cache/outbox-relay (no root
 * needed), so these tests run on a fresh Debian or Ubuntu machine too. Where it cannot be had,
 * they are skipped outside CI, and the skip says why; in CI they fail.
 */
import { spawnSync } from "node:child_process"
import { fileURLToPath } from "node:url"

const ROOT = fileURLToPath(new URL("../..", import.meta.url))
const located = spawnSync("bash", [fileURLToPath(new URL("../../scripts/promtool.sh", import.meta.url))], { encoding: "utf8" })

const promtoolPath: string | undefined = located.status === 0 ? located.stdout.trim() : undefined

/** Why promtool is unavailable (the note of the skipped tests), or undefined when it is there. */
export const promtoolMissing: string | undefined =
  promtoolPath === undefined
    ? located.stderr.trim() || `scripts/promtool.sh failed (${located.error?.message ?? `exit ${located.status}`})`
    : undefined

/** Skip only outside CI; in CI a missing promtool fails the test that needs it. */
export const skipWithoutPromtool = promtoolMissing !== undefined && !process.env.CI

// The default reporter counts skipped tests without naming them: say here which and why.
if (skipWithoutPromtool) console.warn(`promtool checks in this file are skipped: ${promtoolMissing}`)

export const promtool = (args: ReadonlyArray<string>, input?: string) => {
  if (promtoolPath === undefined) throw new Error(promtoolMissing)
  return spawnSync(promtoolPath, [...args], { cwd: ROOT, encoding: "utf8", ...(input === undefined ? {} : { input }) })
}
