/**
 * promtool (Debian's prometheus package) checks the scrape and the alert rules. CI installs
 * it and must run those tests; on a developer's machine without it they are skipped, and
 * the skip says how to get it.
 */
import { spawnSync } from "node:child_process"
import { fileURLToPath } from "node:url"

const ROOT = fileURLToPath(new URL("../..", import.meta.url))

export const promtoolMissing: string | undefined =
  spawnSync("promtool", ["--version"], { encoding: "utf8" }).error === undefined
    ? undefined
    : "promtool is not installed: apt-get install -y prometheus (CI installs it and runs these tests)"

/** Skip only outside CI; in CI a missing promtool fails the test that needs it. */
export const skipWithoutPromtool = promtoolMissing !== undefined && !process.env.CI

export const promtool = (args: ReadonlyArray<string>, input?: string) => {
  if (promtoolMissing !== undefined) throw new Error(promtoolMissing)
  return spawnSync("promtool", [...args], { cwd: ROOT, encoding: "utf8", ...(input === undefined ? {} : { input }) })
}
