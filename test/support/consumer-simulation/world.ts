/**
 * One seeded run of a consumer group: the consumer's real batch core (processPartitionBatch,
 * handOffBatch, GroupMembership) in several members over the fake group, under TestClock,
 * with joins, graceful leaves, kills (no grace: fibers interrupted, as a SIGKILL ends a
 * process), database outages, failing and stuck handlers, relay duplicates produced late,
 * and inbox cleanup. The inbox is a model of the PostgreSQL one (row lock per key for the
 * transaction, the row and the effect committed atomically, a duplicate moving the row to its
 * own delivery, cleanup only of committed offsets); what happened is recorded for the checker.
 */
import { Clock, Deferred, Duration, Effect, Exit, FiberSet, Random, References, Schedule, Scope, Semaphore } from "effect"
import { TestClock } from "effect/testing"
import { makeGroupMembership } from "../../../src/consumer/group-membership.ts"
import type { PartitionBatch } from "../../../src/consumer/group-port.ts"
import { handOffBatch, processPartitionBatch } from "../../../src/consumer/partition-batch.ts"
import type { MessageOutcome } from "../../../src/consumer/process-message.ts"
import { makeRng, type Rng } from "../simulation/random.ts"
import { FakeGroup, type FakeMember } from "./fake-group.ts"

const STEP_MS = 100
const RETRY_MS = 100
const OUTAGE_RETRY_MS = 200
const MAX_RETRIES = 2
const RETENTION_MS = 2_000
const CLEANUP_EVERY_MS = 500

export interface Scenario {
  readonly partitions: number
  readonly keys: number
  readonly initialMembers: number
  readonly maxBatch: number
  readonly commitIntervalMs: number
  /** Keys whose handler always fails (dead-lettered). */
  readonly poison: ReadonlySet<string>
  /** Keys whose handler fails this many times first. */
  readonly flaky: ReadonlyMap<string, number>
  /** A key whose handler hangs until the stuck check is done (its partition only must stall). */
  readonly stuck: string | undefined
  readonly events: ReadonlyArray<{ readonly at: number; readonly kind: "join" | "leave" | "kill" | "outage" | "duplicate" }>
  readonly horizonMs: number
}

export const makeScenario = (rng: Rng): Scenario => {
  const partitions = rng.int(1, 4)
  const keys = rng.int(5, 40)
  const poison = new Set<string>()
  const flaky = new Map<string, number>()
  for (let k = 0; k < keys; k++) {
    if (rng.chance(0.05)) poison.add(`key-${k}`)
    else if (rng.chance(0.1)) flaky.set(`key-${k}`, rng.int(1, MAX_RETRIES))
  }
  const stuckCandidate = `key-${rng.int(0, keys - 1)}`
  const stuck = rng.chance(0.2) && !poison.has(stuckCandidate) ? stuckCandidate : undefined
  const horizonMs = rng.int(1_000, 5_000)
  const events = Array.from({ length: rng.int(0, 8) }, () => ({
    at: rng.int(0, horizonMs),
    kind: rng.pick(["join", "leave", "kill", "outage", "duplicate", "duplicate"] as const),
  })).sort((a, b) => a.at - b.at)
  return {
    partitions,
    keys,
    initialMembers: rng.int(1, 3),
    maxBatch: rng.int(1, 6),
    commitIntervalMs: rng.pick([100, 300, 1000, 3_600_000]),
    poison,
    flaky,
    stuck,
    events,
    horizonMs,
  }
}

export interface InboxRow {
  readonly partition: number
  readonly offset: number
  readonly at: number
}

export interface SimResult {
  readonly seed: number
  readonly scenario: Scenario
  readonly group: FakeGroup
  /** Every application of a key's effects that committed, in order. */
  readonly applied: ReadonlyArray<string>
  readonly deadLettered: ReadonlyArray<string>
  readonly produced: ReadonlySet<string>
  readonly violations: ReadonlyArray<string>
  readonly stuckPartitionHeld: boolean | undefined
  readonly finished: boolean
}

interface World {
  readonly rng: Rng
  readonly group: FakeGroup
  readonly inbox: Map<string, InboxRow>
  readonly keyLocks: Map<string, Semaphore.Semaphore>
  readonly applied: Array<string>
  readonly deadLettered: Array<string>
  readonly violations: Array<string>
  readonly attempts: Map<string, number>
  /** Keys inside a transaction now (their row lock is held). */
  readonly busy: Set<string>
  /** member/partition pairs with a message being processed. */
  readonly inFlight: Set<string>
  /** Keys the cleanup deleted. */
  readonly deleted: Set<string>
  outage: boolean
  stuckReleased: Deferred.Deferred<void>
}

/** The inbox transaction of one message, as PostgreSQL runs it: row lock on the key, insert or skip, effects, COMMIT. */
const processMessage =
  (w: World, scenario: Scenario, memberId: string) =>
  (message: { readonly partition: number; readonly offset: string; readonly headers: Readonly<Record<string, string>> }) =>
    Effect.gen(function* () {
      const key = message.headers.dedup_key!
      const offset = Number(message.offset)
      // One member processes a partition in order: never two of its messages at once.
      const slot = `${memberId}/${message.partition}`
      if (w.inFlight.has(slot)) w.violations.push(`two messages of partition ${message.partition} in flight at once in ${memberId}`)
      w.inFlight.add(slot)
      yield* Effect.addFinalizer(() => Effect.sync(() => w.inFlight.delete(slot)))
      const lock = w.keyLocks.get(key) ?? (yield* Semaphore.make(1))
      w.keyLocks.set(key, lock)
      let failures = 0
      for (;;) {
        if (w.outage) {
          yield* Effect.sleep(OUTAGE_RETRY_MS)
          continue
        }
        const attempt = Effect.gen(function* () {
          yield* Effect.sleep(10)
          if (w.outage) return "outage" as const
          if (w.inbox.has(key)) {
            // A duplicate moves the row to its own delivery (the upsert), committed with the transaction.
            const now = yield* Clock.currentTimeMillis
            yield* Effect.sync(() => w.inbox.set(key, { partition: message.partition, offset, at: now }))
            return "duplicate" as const
          }
          const tries = (w.attempts.get(key) ?? 0) + 1
          w.attempts.set(key, tries)
          if (scenario.stuck === key) yield* Deferred.await(w.stuckReleased)
          if (scenario.poison.has(key) || tries <= (scenario.flaky.get(key) ?? 0)) return "failed" as const
          yield* Effect.sleep(20)
          // COMMIT: the row and the effects at once; a revoke landing now does not undo it.
          return yield* Effect.uninterruptible(
            Effect.gen(function* () {
              if (w.outage) return "outage" as const
              const now = yield* Clock.currentTimeMillis
              w.inbox.set(key, { partition: message.partition, offset, at: now })
              w.applied.push(key)
              return "processed" as const
            }),
          )
        }).pipe(
          Effect.ensuring(Effect.sync(() => w.busy.delete(key))),
          (body) => Effect.sync(() => w.busy.add(key)).pipe(Effect.andThen(body)),
          Semaphore.withPermit(lock),
        )
        const result = yield* attempt
        if (result === "outage") continue
        if (result === "duplicate") return { _tag: "Duplicate" } as const
        if (result === "processed") return { _tag: "Processed" } as const
        failures++
        if (failures > MAX_RETRIES) {
          w.deadLettered.push(key)
          return { _tag: "DeadLettered" } as const
        }
        yield* Effect.sleep(RETRY_MS)
      }
    }).pipe(Effect.scoped)

/** The cleanup rule: older than the retention, and the key's delivery below the group's committed offset. */
const cleanup = (w: World) =>
  Effect.gen(function* () {
    const now = yield* Clock.currentTimeMillis
    for (const [key, row] of [...w.inbox]) {
      const committed = w.group.committed.get(row.partition) ?? 0
      if (row.at < now - RETENTION_MS && row.offset < committed) {
        // FOR UPDATE SKIP LOCKED: a key in a transaction is skipped this round.
        if (w.busy.has(key)) continue
        // The retention covers every copy still to come (the guide's rule for choosing it): a key
        // with a copy not yet committed on any partition is kept, as a long enough retention would.
        const pending = w.group.logs.some((log, p) =>
          log.slice(w.group.committed.get(p) ?? 0).some((m) => m.headers?.dedup_key?.toString() === key),
        )
        if (pending) continue
        if (row.offset >= (w.group.committed.get(row.partition) ?? 0)) w.violations.push(`cleanup deleted ${key}, offset not committed`)
        w.inbox.delete(key)
        w.deleted.add(key)
      }
    }
  })

interface Running {
  readonly member: FakeMember
  readonly scope: Scope.Closeable
  stopping: boolean
  eachBatch: (payload: PartitionBatch) => Promise<void>
  readonly fibers: FiberSet.FiberSet
}

export const simulate = (seed: number): Effect.Effect<SimResult> =>
  Effect.gen(function* () {
    const rng = makeRng(seed)
    const scenario = makeScenario(rng)
    const group = new FakeGroup(scenario.partitions)
    const w: World = {
      rng,
      group,
      inbox: new Map(),
      keyLocks: new Map(),
      applied: [],
      deadLettered: [],
      violations: [],
      attempts: new Map(),
      busy: new Set(),
      inFlight: new Set(),
      deleted: new Set(),
      outage: false,
      stuckReleased: yield* Deferred.make<void>(),
    }
    const produced = new Set<string>()
    const partitionOf = (key: string) => Number(key.slice(4)) % scenario.partitions
    for (let k = 0; k < scenario.keys; k++) {
      const key = `key-${k}`
      produced.add(key)
      group.produce(partitionOf(key), { dedup_key: key }, "{}", 0)
    }

    const running = new Map<string, Running>()
    let nextMember = 0
    const start = Effect.gen(function* () {
      const id = `m${nextMember++}`
      const scope = yield* Scope.make()
      const fibers = yield* FiberSet.make().pipe(Scope.provide(scope))
      const runBatch = yield* FiberSet.runtimePromise(fibers)<never>()
      const member: FakeMember = {
        id,
        membership: makeGroupMembership(),
        alive: true,
        assigned: new Set(),
        paused: new Set(),
        position: new Map(),
        inFetch: new Set(),
      }
      const r: Running = {
        member,
        scope,
        stopping: false,
        fibers,
        eachBatch: () => Promise.resolve(),
      }
      const processBatch = processPartitionBatch<never>({
        processMessage: (message) => processMessage(w, scenario, id)(message) as Effect.Effect<MessageOutcome>,
        afterMessage: () => Effect.void,
        isStopping: () => r.stopping,
        commitInterval: Duration.millis(scenario.commitIntervalMs),
        consumerGroup: "sim",
        slowMessageWarning: Duration.hours(1),
      })
      r.eachBatch = handOffBatch({
        run: (payload, term) => runBatch(processBatch(payload, term)),
        membership: member.membership,
        isStopping: () => r.stopping,
        onBatchDefect: (error) => {
          if (!r.stopping && member.alive) w.violations.push(`batch defect in ${id}: ${String(error)}`)
        },
      })
      running.set(id, r)
      yield* cleanup(w).pipe(Effect.repeat(Schedule.spaced(CLEANUP_EVERY_MS)), Effect.forkIn(scope))
      group.join(member)
    })
    const runningOf = (id: string) => running.get(id)!

    // kafkajs' fetch loop for one member: each eligible partition's batch handed to eachBatch, awaited before it is fetched again.
    const fetchRound = Effect.gen(function* () {
      for (const r of running.values()) {
        const state = runningOf(r.member.id)
        if (!r.member.alive || state.stopping) continue
        for (const p of group.fetchable(r.member)) {
          r.member.inFetch.add(p)
          const payload = group.batchFor(r.member, p, scenario.maxBatch, () => r.member.alive && !state.stopping)
          yield* Effect.promise(() => state.eachBatch(payload)).pipe(
            Effect.ensuring(Effect.sync(() => r.member.inFetch.delete(p))),
            Effect.forkDetach,
          )
        }
      }
    })

    const settle = Effect.yieldNow
    const step = Effect.gen(function* () {
      yield* fetchRound
      yield* settle
      yield* TestClock.adjust(STEP_MS)
      yield* settle
    })

    const kill = (id: string) =>
      Effect.gen(function* () {
        const r = runningOf(id)
        r.member.alive = false
        yield* Scope.close(r.scope, Exit.void)
        running.delete(id)
        group.leave(id)
      })
    const stopGracefully = (id: string) =>
      Effect.gen(function* () {
        const r = runningOf(id)
        r.stopping = true
        // shutdownGrace: the batch in flight may finish its message and commit, then it is abandoned.
        for (let i = 0; i < 40 && (yield* FiberSet.size(r.fibers)) > 0; i++) yield* step
        yield* kill(id)
      })

    for (let i = 0; i < scenario.initialMembers; i++) yield* start
    let eventIndex = 0
    let outageUntil = 0
    while ((yield* Clock.currentTimeMillis) < scenario.horizonMs) {
      const now = yield* Clock.currentTimeMillis
      while (eventIndex < scenario.events.length && scenario.events[eventIndex]!.at <= now) {
        const event = scenario.events[eventIndex++]!
        const ids = [...running.keys()]
        switch (event.kind) {
          case "join":
            if (running.size < 4) yield* start
            break
          case "leave":
            if (ids.length > 1) yield* stopGracefully(rng.pick(ids))
            break
          case "kill":
            if (ids.length > 1) yield* kill(rng.pick(ids))
            break
          case "outage":
            w.outage = true
            outageUntil = now + rng.int(100, 1_500)
            break
          case "duplicate": {
            const key = `key-${rng.int(0, scenario.keys - 1)}`
            // Copies come within the retention (the guide's rule): none of a key the cleanup already deleted.
            if (!w.deleted.has(key)) group.produce(partitionOf(key), { dedup_key: key }, "{}", now)
            break
          }
        }
      }
      if (w.outage && now >= outageUntil) w.outage = false
      yield* step
    }
    w.outage = false

    // A stuck message holds only its partition: every other partition reaches its end meanwhile.
    let stuckPartitionHeld: boolean | undefined
    if (scenario.stuck !== undefined) {
      const stuckPartition = partitionOf(scenario.stuck)
      const stuckOffset = group.logs[stuckPartition]!.findIndex((m) => m.headers?.dedup_key?.toString() === scenario.stuck)
      const othersDone = () => group.logs.every((log, p) => p === stuckPartition || (group.committed.get(p) ?? 0) === log.length)
      for (let i = 0; i < 400 && !othersDone(); i++) yield* step
      stuckPartitionHeld = (group.committed.get(stuckPartition) ?? 0) <= stuckOffset
      if (!othersDone()) w.violations.push("a stuck message held up other partitions than its own")
      yield* Deferred.succeed(w.stuckReleased, undefined)
    }

    // Quiescence: no more faults; everything must be applied or dead-lettered, and committed to the end.
    if (running.size === 0) yield* start
    const done = () => group.logs.every((log, p) => (group.committed.get(p) ?? 0) === log.length)
    for (let i = 0; i < 2_000 && !done(); i++) yield* step
    const finished = done()
    for (const id of [...running.keys()]) yield* kill(id)

    return {
      seed,
      scenario,
      group,
      applied: w.applied,
      deadLettered: w.deadLettered,
      produced,
      violations: [...w.violations, ...group.violations],
      stuckPartitionHeld,
      finished,
    } satisfies SimResult
  }).pipe(Effect.provide(TestClock.layer()), Random.withSeed(seed), Effect.provideService(References.MinimumLogLevel, "None"))
