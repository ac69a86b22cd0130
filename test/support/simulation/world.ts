/**
 * Runs one scenario: real relay code (runRelayUntilStopped and everything under it) in 1–4
 * instances over the fake store and broker, under TestClock, with faults applied at their
 * times. Nothing here does real I/O or reads the wall clock, so a seed replays exactly. The
 * fakes report every statement and acknowledgement to a step checker as they land.
 */
import { Clock, Context, Effect, Fiber, Layer, Random, Ref, References, Stream } from "effect"
import { TestClock } from "effect/testing"
import { RelayConfig } from "../../../src/config/config.ts"
import { DeadLetterSignal } from "../../../src/ops/dead-letter-signal.ts"
import { InstanceId } from "../../../src/outbox/instance-id.ts"
import { runRelayUntilStopped } from "../../../src/relay/relay.ts"
import { RelayEvents } from "../../../src/relay/relay-events.ts"
import { RelayState } from "../../../src/relay/relay-state.ts"
import { type FakeKafka, fakePublisherLayer, makeFakeKafka } from "../fake-kafka.ts"
import {
  type FakeDatabase,
  type FakeRow,
  fakeOutboxStoreLayer,
  makeFakeDatabase,
  settleOutOfLimits,
  snapshotRows,
  writeEvents,
} from "../fake-outbox-store.ts"
import { makeRng } from "./random.ts"
import { drawScenario, type EventKind, type Fault, type Scenario, TOPICS } from "./scenario.ts"
import { makeStepChecker, type StepChecker } from "./step-checker.ts"

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
  /** What the step checker saw break, as it happened. */
  readonly steps: StepChecker
  /** When every event was SENT or DEAD (undefined: not within the settle limit). */
  readonly settledAt: number | undefined
  /** When the last fault was healed and the last restart made: settling is timed from here. */
  readonly quietFrom: number
  readonly crashes: number
}

const STEP_MS = 250
const SETTLE_LIMIT_MS = 120_000

// Nobody listens to the relay's events here; the real layer's 4,096-slot PubSub per instance
// was a measurable share of a run.
const silentRelayEvents = Layer.succeed(RelayEvents, RelayEvents.of({ emit: () => Effect.void, subscribe: Effect.succeed(Stream.empty) }))

const instanceLayer = (scenario: Scenario, db: FakeDatabase, kafka: FakeKafka, name: string) =>
  Layer.mergeAll(fakeOutboxStoreLayer(db), fakePublisherLayer(kafka), RelayState.layer, silentRelayEvents, DeadLetterSignal.layer).pipe(
    Layer.provideMerge(Layer.mergeAll(Layer.succeed(InstanceId, name), Layer.succeed(RelayConfig, scenario.config))),
  )

interface Action {
  readonly at: number
  readonly run: Effect.Effect<void>
}

export const simulate = (seed: number): Effect.Effect<SimulationResult> =>
  Effect.scoped(
    Effect.gen(function* () {
      const rng = makeRng(seed)
      const scenario = drawScenario(seed, rng)
      const db = yield* makeFakeDatabase(rng.next)
      const broker = scenario.broker
      const kafka = makeFakeKafka({
        topics: [TOPICS.search_click, TOPICS.ac_select, scenario.config.dlqTopic],
        random: rng.next,
        dlqMaxRecordBytes: scenario.dlqMaxRecordBytes,
        latencyMs: broker._tag === "slow" ? () => rng.int(0, broker.maxMs) : () => 0,
      })
      const steps = makeStepChecker()
      db.observer = steps
      kafka.observer = steps
      const scope = yield* Effect.scope
      const kinds = new Map<string, EventKind>()
      const instances: Array<Instance> = []
      let started = 0
      let crashes = 0
      let quietFrom = scenario.healAt

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
          crashes++
          steps.crashed(instance.name)
          db.faults.severed.add(instance.name)
          kafka.faults.severed.add(instance.name)
          yield* Effect.forkIn(Fiber.interrupt(instance.fiber), scope)
        })
      const stopGracefully = (instance: Instance) =>
        Effect.gen(function* () {
          instance.stop = "graceful"
          yield* Effect.forkIn(Fiber.interrupt(instance.fiber), scope)
        })

      // What happens when, in time order; an action may add later ones (a restart after a crash).
      const agenda: Array<Action> = []
      const schedule = (at: number, run: Effect.Effect<void>) => {
        let i = agenda.length
        while (i > 0 && agenda[i - 1]!.at > at) i--
        agenda.splice(i, 0, { at, run })
      }
      for (const write of scenario.writes) {
        schedule(
          write.at,
          Effect.suspend(() => {
            for (const e of write.events) kinds.set(e.dedupKey, e.kind)
            return writeEvents(db, write.events)
          }),
        )
      }
      const removedTopics = new Map<string, number>()
      const restoreTopics = () => {
        for (const [topic, partitions] of removedTopics) kafka.topics.set(topic, partitions)
        removedTopics.clear()
      }
      const faultActions = (fault: Fault): ReadonlyArray<Action> => {
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
          case "DeadLetterTopicMissing": {
            const topic = scenario.config.dlqTopic
            return window(
              () => {
                const partitions = kafka.topics.get(topic)
                if (partitions !== undefined) removedTopics.set(topic, partitions)
                kafka.topics.delete(topic)
              },
              restoreTopics,
              fault.forMs,
            )
          }
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
                  if (target === undefined) return Effect.void
                  const last = instances.filter((i) => i.stop === "running").length === 1
                  // The restart comes restartAfterMs later; the last instance always comes back (at
                  // once when the schedule drew no restart), so the backlog still drains.
                  const restartAfter = fault.restartAfterMs ?? (last ? 0 : undefined)
                  if (restartAfter === undefined) return crash(target)
                  return crash(target).pipe(
                    Effect.andThen(
                      Effect.sync(() => {
                        quietFrom = Math.max(quietFrom, fault.at + restartAfter)
                        schedule(fault.at + restartAfter, start)
                      }),
                    ),
                  )
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
      for (const fault of scenario.faults) for (const action of faultActions(fault)) schedule(action.at, action.run)
      schedule(
        scenario.healAt,
        Effect.sync(() => {
          kafka.faults.down = false
          kafka.faults.errorRate = 0
          kafka.faults.timeoutRate = 0
          kafka.faults.sendDelayMs = 0
          db.faults.down = false
          db.faults.failureRate = 0
          restoreTopics()
        }),
      )

      // Rows from before the row limits, then the migration that adds them (and settles what breaks them).
      for (const e of scenario.legacy) kinds.set(e.dedupKey, e.kind)
      yield* writeEvents(db, scenario.legacy, false)
      db.constraints = scenario.constraints
      if (scenario.constraints) yield* settleOutOfLimits(db)
      for (let i = 0; i < scenario.instances; i++) yield* start
      while (agenda.length > 0) {
        const action = agenda.shift()!
        const now = yield* Clock.currentTimeMillis
        if (action.at > now) yield* TestClock.adjust(action.at - now)
        yield* action.run
      }
      // Healed: run until every event is settled (or give up, and let the invariants say why).
      const settled = Effect.map(Ref.get(db.table), (t) => t.rows.every((r) => r.status === "SENT" || r.status === "DEAD"))
      while (!(yield* settled) && (yield* Clock.currentTimeMillis) < quietFrom + SETTLE_LIMIT_MS) {
        yield* TestClock.adjust(STEP_MS)
      }
      const settledAt = (yield* settled) ? yield* Clock.currentTimeMillis : undefined
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
        steps,
        settledAt,
        quietFrom,
        crashes,
      } satisfies SimulationResult
    }),
  ).pipe(Effect.provide(TestClock.layer()), Random.withSeed(seed), Effect.provideService(References.MinimumLogLevel, "None"))
