import { describe, expect, it } from "@effect/vitest"
import { configTable, readmeTable } from "../../scripts/config-table.ts"

describe("README", () => {
  it("documents exactly the configuration the code reads (regenerate with npm run docs:config)", () => {
    expect(readmeTable()).toBe(configTable())
  })
})
