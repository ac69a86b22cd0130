/** The README's configuration table, from src/config/config.ts. `--write` updates README.md in place. */
import { readFileSync, writeFileSync } from "node:fs"
import { describeSettings } from "../src/config/config.ts"

const START = "<!-- config-table:start -->"
const END = "<!-- config-table:end -->"
const README = new URL("../README.md", import.meta.url)

export const configTable = (): string =>
  [
    "| variable | meaning | default |",
    "|---|---|---|",
    ...describeSettings().map(
      (s) =>
        `| \`${s.name}\` | ${s.description}${s.secret ? " (secret: never printed)" : ""} | ${s.defaultText === undefined ? "**required**" : `\`${s.defaultText}\``} |`,
    ),
  ].join("\n")

/** The table as the README has it now. */
export const readmeTable = (readme = readFileSync(README, "utf8")): string =>
  readme.slice(readme.indexOf(START) + START.length, readme.indexOf(END)).trim()

if (import.meta.main) {
  if (process.argv.includes("--write")) {
    const readme = readFileSync(README, "utf8")
    writeFileSync(
      README,
      `${readme.slice(0, readme.indexOf(START) + START.length)}\n${configTable()}\n${readme.slice(readme.indexOf(END))}`,
    )
  } else {
    process.stdout.write(`${configTable()}\n`)
  }
}
