/**
 * One fault scenario's lifetime: what it started is stopped afterwards, also when the test
 * fails, and on failure the relays' output, broker and database logs are printed first.
 */
import { inject, onTestFinished } from "vitest"
import { DEFAULT_PLAN, EventWriter } from "./event-writer.ts"
import { type Db, maxId, openDb, readOutbox, scenarioDatabase, startDrainTimer, waitDrained } from "./fault-db.ts"
import { createScenarioTopics, readAll, type ScenarioTopics } from "./kafka-readback.ts"
import { account, type Ledger, printReport } from "./ledger.ts"
import { sleep, startOwnedBroker } from "./processes.ts"
import { RelayProcess } from "./relay-process.ts"
import { StallingProxy } from "./tcp-proxy.ts"

export class Scenario {
  readonly name: string
  readonly startedAt = Date.now()
  readonly relays: Array<RelayProcess> = []
  private readonly cleanups: Array<{ readonly label: string; readonly run: () => Promise<void> }> = []
  private readonly diagnostics: Array<{ readonly label: string; readonly read: () => string }> = []

  constructor(name: string) {
    this.name = name
    onTestFinished(async (context) => {
      if (context.task.result?.state === "fail") this.printDiagnostics()
      await this.teardown()
    }, 120_000)
  }

  /** Runs at teardown, last registered first. */
  defer(label: string, run: () => Promise<void>): void {
    this.cleanups.push({ label, run })
  }

  /** Printed when the test fails. */
  diagnose(label: string, read: () => string): void {
    this.diagnostics.push({ label, read })
  }

  /** A relay process (`outbox-relay run`), stopped at teardown. */
  startRelay(name: string, env: Readonly<Record<string, string>>): RelayProcess {
    const relay = new RelayProcess(name, env)
    this.relays.push(relay)
    this.defer(`relay ${name}`, async () => {
      await relay.stop(5_000)
    })
    return relay
  }

  elapsedSeconds(): number {
    return (Date.now() - this.startedAt) / 1000
  }

  private printDiagnostics() {
    for (const relay of this.relays) {
      // Per-batch lines would bury the rest: they are summed, everything else is printed.
      const batches = relay.linesWith("batch relayed")
      const total = (field: string) => batches.reduce((n, l) => n + (Number(l[field]) || 0), 0)
      const notable = relay.output.filter((l) => !l.includes('"message":"batch relayed"') && !l.includes('"message":"SENT"'))
      console.error(
        `----- ${this.name}: relay ${relay.name} (pid ${relay.pid}, ${relay.running ? "running" : "exited"}): ` +
          `${batches.length} batches, claimed ${total("claimed")}, sent ${total("sent")}, failed ${total("failed")}, ` +
          `dead ${total("dead")}, given back ${total("given_back")}, lost ${total("lost")}; other lines (last 200): -----`,
      )
      console.error(notable.slice(-200).join("\n"))
      console.error(`----- ${this.name}: relay ${relay.name}, last 20 lines -----`)
      console.error(relay.output.slice(-20).join("\n"))
    }
    for (const d of this.diagnostics) {
      console.error(`----- ${this.name}: ${d.label} -----`)
      try {
        console.error(d.read())
      } catch (e) {
        console.error(`(could not read: ${String(e)})`)
      }
    }
  }

  private async teardown() {
    const errors: Array<string> = []
    for (const c of [...this.cleanups].reverse()) {
      try {
        await c.run()
      } catch (e) {
        errors.push(`${c.label}: ${String(e)}`)
      }
    }
    if (errors.length > 0) console.error(`[fault] ${this.name}: teardown problems:\n${errors.join("\n")}`)
  }
}

export interface Stage {
  readonly brokers: string
  readonly topics: ScenarioTopics
  readonly db: Db
  readonly writer: EventWriter
  /** DATABASE_URL, KAFKA_BROKERS, TOPIC_MAP and DLQ_TOPIC for this scenario's relays. */
  readonly relayEnv: Readonly<Record<string, string>>
}

/**
 * Topics, a migrated database (a fresh one on the shared server unless `databaseUrl` is
 * given) and a writer for one scenario, all torn down with it.
 */
export const stage = async (
  s: Scenario,
  options: {
    readonly label: string
    readonly brokers?: string
    readonly databaseUrl?: string
    /** Types given a topic in TOPIC_MAP (default: the writer's types). */
    readonly mappedTypes?: ReadonlyArray<string>
  },
): Promise<Stage> => {
  const brokers = options.brokers ?? inject("kafkaBrokers")
  const topics = await createScenarioTopics(brokers, options.label, options.mappedTypes ?? DEFAULT_PLAN.eventTypes)
  let url = options.databaseUrl
  if (url === undefined) {
    const database = await scenarioDatabase()
    s.defer("database", database.drop)
    url = database.url
  }
  const db = await openDb(url)
  s.defer("pool", db.close)
  const writer = new EventWriter(db, { ...DEFAULT_PLAN, prefix: options.label })
  s.defer("writer", () => writer.abandon())
  return { brokers, topics, db, writer, relayEnv: { DATABASE_URL: url, KAFKA_BROKERS: brokers, ...topics.env } }
}

/** Reads the table and the scenario's topics back and counts every event. */
export const settle = async (st: Stage, topicMap: Readonly<Record<string, string>> = st.topics.map): Promise<Ledger> =>
  account({
    written: st.writer.written,
    rows: await readOutbox(st.db),
    messages: await readAll(st.brokers, st.topics.all),
    topicMap,
    dlqTopic: st.topics.dlq,
  })

/**
 * After a fault is healed: times how long the backlog it left takes to drain while the
 * writer goes on for two more seconds, then waits for everything and counts every event.
 */
export const recoverAndSettle = async (st: Stage, healedAt: number): Promise<{ recoverySeconds: number; ledger: Ledger }> => {
  const backlogTop = await maxId(st.db)
  const recovered = startDrainTimer(st.db, { upToId: backlogTop, sinceMs: healedAt, timeoutMs: 45_000 })
  await new Promise((resolve) => setTimeout(resolve, 2_000))
  await st.writer.stop()
  const recoverySeconds = await recovered
  await waitDrained(st.db, { sinceMs: healedAt, timeoutMs: 30_000 })
  return { recoverySeconds, ledger: await settle(st) }
}

/**
 * One outage: break something, wait `forMs`, heal it, then time the recovery and count every
 * event (recoverAndSettle). Prints the scenario's report, with `extra` given how many seconds
 * the outage lasted, and returns the ledger for the test's own assertions.
 */
export const outage = async (
  s: Scenario,
  st: Stage,
  o: {
    readonly breakIt: () => unknown
    readonly forMs: number
    readonly heal: () => unknown
    readonly extra: (downSeconds: string) => Readonly<Record<string, string | number>>
  },
): Promise<Ledger> => {
  await o.breakIt()
  const down = Date.now()
  await sleep(o.forMs)
  await o.heal()
  const healedAt = Date.now()
  // Timed from here, while the writer goes on: the backlog left by the fault drains.
  const { recoverySeconds, ledger } = await recoverAndSettle(st, healedAt)
  printReport({
    scenario: s.name,
    ledger,
    recoverySeconds,
    wallSeconds: s.elapsedSeconds(),
    extra: o.extra(((healedAt - down) / 1000).toFixed(1)),
  })
  return ledger
}

/** A broker of the scenario's own that every client reaches through a proxy (it advertises the proxy's port). */
export const brokerBehindProxy = async (s: Scenario) => {
  const proxy = await StallingProxy.listen()
  s.defer("proxy", () => proxy.close())
  const broker = await startOwnedBroker({ advertisedPort: proxy.port })
  proxy.forwardTo(broker.port)
  s.defer("broker", broker.stop)
  s.diagnose("broker log", () => broker.logTail())
  return { proxy, broker }
}
