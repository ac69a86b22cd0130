import { describe, expect, it } from "@effect/vitest"
import { FailedKeys } from "../../src/relay/failed-keys.ts"

describe("failed keys in the pipeline", () => {
  it("holds back a key's events claimed behind its failure until the failure is marked, and only those", () => {
    const keys = new FailedKeys()
    keys.failed(1, ["k", null])
    // Claimed while batch 1 was in flight or before it was marked: wait.
    expect(keys.mustWait("k", 100)).toBe(true)
    expect(keys.mustWait("other", 100)).toBe(false)
    expect(keys.mustWait(null, 100)).toBe(false)
    keys.marked(1, ["k"], 200)
    expect(keys.mustWait("k", 150)).toBe(true)
    // Claimed after the mark: the claim itself saw the failed row and holds the key back.
    expect(keys.mustWait("k", 250)).toBe(false)
  })

  it("keeps holding while any of several failures of a key is unmarked", () => {
    const keys = new FailedKeys()
    keys.failed(1, ["k"])
    keys.failed(3, ["k"])
    keys.marked(1, ["k"], 200)
    expect(keys.mustWait("k", 300)).toBe(true)
    keys.marked(3, ["k"], 400)
    expect(keys.mustWait("k", 500)).toBe(false)
  })

  it("forgets marks older than a lease", () => {
    const keys = new FailedKeys()
    keys.failed(1, ["k"])
    keys.marked(1, ["k"], 200)
    keys.forgetBefore(300)
    expect(keys.mustWait("k", 100)).toBe(false)
  })
})
