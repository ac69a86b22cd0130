/** What must hold after every consumer simulation run; each violation names its invariant. */
import type { SimResult } from "./world.ts"

export interface Violation {
  readonly invariant: string
  readonly detail: string
}

export const checkConsumerInvariants = (r: SimResult): ReadonlyArray<Violation> => {
  const out: Array<Violation> = []
  const counts = new Map<string, number>()
  for (const key of r.applied) counts.set(key, (counts.get(key) ?? 0) + 1)
  for (const [key, n] of counts)
    if (n > 1) out.push({ invariant: "each dedup_key applied at most once", detail: `${key} applied ${n} times` })
  const dead = new Set(r.deadLettered)
  for (const key of r.produced) {
    if (!counts.has(key) && !dead.has(key))
      out.push({ invariant: "every produced message applied or dead-lettered", detail: `${key} neither` })
  }
  for (const key of r.scenario.poison) {
    if (counts.has(key)) out.push({ invariant: "a message that always fails is never applied", detail: key })
  }
  if (!r.finished) {
    const behind = r.group.logs.map((log, p) => `p${p} ${r.group.committed.get(p) ?? 0}/${log.length}`).join(", ")
    out.push({ invariant: "the group commits every partition to its end once faults stop", detail: behind })
  }
  if (r.stuckPartitionHeld === false) {
    out.push({ invariant: "a stuck message is never committed past", detail: `${r.scenario.stuck}` })
  }
  for (const v of r.violations) {
    const invariant = v.startsWith("commit after a revoke")
      ? "no commit after a revoke"
      : v.startsWith("cleanup")
        ? "cleanup never deletes a key whose offset is not committed"
        : v.startsWith("a stuck message")
          ? "a stuck message stalls only its partition"
          : v.startsWith("two messages")
            ? "each partition is processed in order, one message at a time"
            : "no defect escapes a batch; commits never go backwards"
    out.push({ invariant, detail: v })
  }
  return out
}
