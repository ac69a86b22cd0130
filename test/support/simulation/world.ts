/**
 * Runs one scenario: real relay code (runRelayUntilStopped and everything under it) in 1–4
 * instances over the fake store and broker, under TestClock, with faults applied at their
 * times. Nothing here does real I/O or reads the wall clock, so a seed replays exactly.
 */
import { Clock, Context, Effect, Fiber, Layer, Random, Ref, References } from "effect"
import { TestClock } from "effect/testing"
import { RelayConfig } from "../../../src/config/config.ts"
import { DeadLetterSignal } from "../../../src/ops/dead-letter-signal.ts"
import { InstanceId } from "../../../src/outbox/instance-id.ts"
import { runRelayUntilStopped } from "../../../src/relay/relay.ts"
import { RelayEvents } from "../../../src/relay/relay-events.ts"
import { RelayState } from "../../../src/relay/relay-state.ts"
import { type FakeKafka, fakePublisherLayer, makeFakeKafka } from "../fake-kafka.ts"
import { type FakeDatabase, type FakeRow, fakeOutboxStoreLayer, makeFakeDatabase, snapshotRows, writeEvents } from "../fake-outbox-store.ts"
import { makeRng } from "./random.ts"
import { drawScenario, type EventKind, type Fault, type Scenario, TOPICS } from "./scenario.ts"

interface Instance {
  readonly name: string
  readonly state: RelayState["Service"]
  readonly fiber: Fiber.Fiber<unknown, unknown>
  stop: "running" | "crashed" | "graceful"
}

export interface SimulationResult {
  readonly scenario: Scenario
  readonly rows: ReadonlyArray<FakeRow>
  readonly kinds: ReadonlyMap<string, EventKind>
  readonly db: FakeDatabase
  readonly kafka: FakeKafka
  readonly instances: ReadonlyArray<{ readonly name: string; readonly stop: Instance["stop"] }>
  /** Simulated time at the end. */
  readonly endedAt: number
  /** Every instance's fiber ended (graceful stops completed). */
  readonly allStopped: boolean
}

const STEP_MS = 250
const SETTLE_LIMIT_MS = 120_000

const instanceLayer = (scenario: Scenario, db: FakeDatabase, kafka: FakeKafka, name: string) =>
  Layer.mergeAll(fakeOutboxStoreLayer(db), fakePublisherLayer(kafka), RelayState.layer, RelayEvents.layer, DeadLetterSignal.layer).pipe(
    Layer.provideMerge(Layer.mergeAll(Layer.succeed(InstanceId, name), Layer.succeed(RelayConfig, scenario.config))),
  )

export const simulate = (seed: number): Effect.Effect<SimulationResult> =>
  Effect.scoped(
    Effect.gen(function* () {
      const rng = makeRng(seed)
      const scenario = drawScenario(seed, rng)
      const db = yield* makeFakeDatabase(rng.next)
      const kafka = makeFakeKafka({
        topics: [TOPICS.search_click, TOPICS.ac_select, scenario.config.dlqTopic],
        random: rng.next,
        dlqMaxRecordBytes: scenario.dlqMaxRecordBytes,
      })
      const scope = yield* Effect.scope
      const kinds = new Map<string, EventKind>()
      const instances: Array<Instance> = []
      let started = 0

      const start = Effect.gen(function* () {
        const name = `relay-${started++}`
        const context = yield* Layer.buildWithScope(instanceLayer(scenario, db, kafka, name), scope)
        const fiber = yield* Effect.forkIn(runRelayUntilStopped.pipe(Effect.provide(context)), scope)
        instances.push({ name, state: Context.get(context, RelayState), fiber, stop: "running" })
      })
      const running = (index: number) => instances.filter((i) => i.stop === "running")[index]
      // A crash: the process is gone, so nothing it would still send or write arrives.
      const crash = (instance: Instance) =>
        Effect.gen(function* () {
          instance.stop = "crashed"
          db.faults.severed.add(instance.name)
          kafka.faults.severed.add(instance.name)
          yield* Effect.forkIn(Fiber.interrupt(instance.fiber), scope)
        })
      const stopGracefully = (instance: Instance) =>
        Effect.gen(function* () {
          instance.stop = "graceful"
          yield* Effect.forkIn(Fiber.interrupt(instance.fiber), scope)
        })

      const timeline: Array<{ readonly at: number; readonly run: Effect.Effect<void> }> = []
      for (const write of scenario.writes) {
        timeline.push({
          at: write.at,
          run: Effect.gen(function* () {
            for (const e of write.events) kinds.set(e.dedupKey, e.kind)
            yield* writeEvents(db, write.events)
          }),
        })
      }
      const faultActions = (fault: Fault): ReadonlyArray<{ readonly at: number; readonly run: Effect.Effect<void> }> => {
        const window = (on: () => void, off: () => void, forMs: number) => [
          { at: fault.at, run: Effect.sync(on) },
          { at: fault.at + forMs, run: Effect.sync(off) },
        ]
        switch (fault._tag) {
          case "KafkaDown":
            return window(
              () => (kafka.faults.down = true),
              () => (kafka.faults.down = false),
              fault.forMs,
            )
          case "DatabaseDown":
            return window(
              () => (db.faults.down = true),
              () => (db.faults.down = false),
              fault.forMs,
            )
          case "DatabaseFlaky":
            return window(
              () => (db.faults.failureRate = fault.rate),
              () => (db.faults.failureRate = 0),
              fault.forMs,
            )
          case "KafkaErrors":
            return window(
              () => (kafka.faults.errorRate = fault.rate),
              () => (kafka.faults.errorRate = 0),
              fault.forMs,
            )
          case "KafkaTimeouts":
            return window(
              () => (kafka.faults.timeoutRate = fault.rate),
              () => (kafka.faults.timeoutRate = 0),
              fault.forMs,
            )
          case "SlowSends":
            return window(
              () => (kafka.faults.sendDelayMs = fault.delayMs),
              () => (kafka.faults.sendDelayMs = 0),
              fault.forMs,
            )
          case "CreateTopic":
            return [{ at: fault.at, run: Effect.sync(() => kafka.topics.set(fault.topic, 2)) }]
          case "Pause": {
            let target: Instance | undefined
            return [
              {
                at: fault.at,
                run: Effect.suspend(() => {
                  target = running(fault.instance)
                  return target === undefined ? Effect.void : Ref.set(target.state.paused, true)
                }),
              },
              {
                at: fault.at + fault.forMs,
                run: Effect.suspend(() => (target === undefined ? Effect.void : Ref.set(target.state.paused, false))),
              },
            ]
          }
          case "Crash":
            return [
              {
                at: fault.at,
                run: Effect.suspend(() => {
                  const target = running(fault.instance)
                  // Keep one instance running, or a restart, so the backlog still drains.
                  if (target === undefined) return Effect.void
                  const last = instances.filter((i) => i.stop === "running").length === 1
                  return crash(target).pipe(Effect.andThen(last || fault.restartAfterMs !== undefined ? start : Effect.void))
                }),
              },
            ]
          case "GracefulStop":
            return [
              {
                at: fault.at,
                run: Effect.suspend(() => {
                  const target = running(fault.instance)
                  return target === undefined ? Effect.void : stopGracefully(target).pipe(Effect.andThen(start))
                }),
              },
            ]
        }
      }
      for (const fault of scenario.faults) timeline.push(...faultActions(fault))
      timeline.push({
        at: scenario.healAt,
        run: Effect.sync(() => {
          kafka.faults.down = false
          kafka.faults.errorRate = 0
          kafka.faults.timeoutRate = 0
          kafka.faults.sendDelayMs = 0
          db.faults.down = false
          db.faults.failureRate = 0
        }),
      })
      timeline.sort((a, b) => a.at - b.at)

      for (let i = 0; i < scenario.instances; i++) yield* start
      for (const action of timeline) {
        const now = yield* Clock.currentTimeMillis
        if (action.at > now) yield* TestClock.adjust(action.at - now)
        yield* action.run
      }
      // Healed: run until every event is settled (or give up, and let the invariants say why).
      const settled = (rows: ReadonlyArray<FakeRow>) => rows.every((r) => r.status === "SENT" || r.status === "DEAD")
      while (!settled(yield* snapshotRows(db)) && (yield* Clock.currentTimeMillis) < scenario.healAt + SETTLE_LIMIT_MS) {
        yield* TestClock.adjust(STEP_MS)
      }
      for (const instance of instances) if (instance.stop === "running") yield* stopGracefully(instance)
      const stopLimit = (yield* Clock.currentTimeMillis) + 30_000
      const done = () => Effect.sync(() => instances.every((i) => i.fiber.pollUnsafe() !== undefined))
      while (!(yield* done()) && (yield* Clock.currentTimeMillis) < stopLimit) yield* TestClock.adjust(STEP_MS)
      return {
        scenario,
        rows: yield* snapshotRows(db),
        kinds,
        db,
        kafka,
        instances: instances.map((i) => ({ name: i.name, stop: i.stop })),
        endedAt: yield* Clock.currentTimeMillis,
        allStopped: yield* done(),
      } satisfies SimulationResult
    }),
  ).pipe(Effect.provide(TestClock.layer()), Random.withSeed(seed), Effect.provideService(References.MinimumLogLevel, "None"))
