/**
 * A service writing events while the relay runs: small batches every few milliseconds,
 * several aggregate keys and event types, some events without a key. A batch that fails
 * (database down) is retried as is until it commits; dedup_key makes the retry a no-op if
 * the first try did commit, so the written order per key is the order of the ids.
 */
import type { Db } from "./fault-db.ts"

export interface EventSpec {
  readonly dedupKey: string
  readonly eventType: string
  readonly aggregateKey: string | null
  /** Any JSON value, as stored in the jsonb column. */
  readonly payload: unknown
  readonly headers?: Readonly<Record<string, unknown>>
  readonly traceparent?: string | null
}

export interface WriterPlan {
  /** dedup_key prefix, unique per scenario. */
  readonly prefix: string
  readonly eventTypes: ReadonlyArray<string>
  /** Number of aggregate keys (`key-0` … ); every `unkeyedEvery`-th event has none. */
  readonly keys: number
  readonly unkeyedEvery: number
  readonly batchSize: number
  readonly intervalMs: number
}

export const DEFAULT_PLAN: Omit<WriterPlan, "prefix"> = {
  eventTypes: ["search_click", "search_impression", "ac_select", "job_run_event"],
  keys: 24,
  unkeyedEvery: 7,
  batchSize: 3,
  intervalMs: 10,
}

export class EventWriter {
  /** Every event whose insert committed, in write order. */
  readonly written: Array<EventSpec> = []
  /** Inserts that failed and were retried (a database outage). */
  failedInserts = 0
  lastError: string | undefined
  private readonly db: Db
  private readonly plan: WriterPlan
  private readonly injected: Array<EventSpec> = []
  private readonly seqByKey = new Map<string, number>()
  private n = 0
  private running = false
  private abandoned = false
  private loop: Promise<void> | undefined

  constructor(db: Db, plan: WriterPlan) {
    this.db = db
    this.plan = plan
  }

  start(): void {
    this.running = true
    this.loop = this.run()
  }

  /** Stops after the batch in flight has committed. */
  async stop(): Promise<void> {
    this.running = false
    await this.loop
  }

  /** Teardown: stops at once, giving up on a batch the database does not take (it may be down for good). */
  async abandon(): Promise<void> {
    this.abandoned = true
    await this.stop()
  }

  /** Queues events to go out, in order, with the next batch (poison, bad input…). */
  inject(events: ReadonlyArray<EventSpec>): void {
    this.injected.push(...events)
  }

  /** The next generated event: types and keys rotate, the payload carries the key's sequence. */
  nextEvent(): EventSpec {
    const i = this.n++
    const { prefix, eventTypes, keys, unkeyedEvery } = this.plan
    const aggregateKey = i % unkeyedEvery === unkeyedEvery - 1 ? null : `key-${i % keys}`
    const seqKey = aggregateKey ?? "(none)"
    const seq = (this.seqByKey.get(seqKey) ?? 0) + 1
    this.seqByKey.set(seqKey, seq)
    return {
      dedupKey: `${prefix}-${i}`,
      eventType: eventTypes[Math.floor(i / keys) % eventTypes.length]!,
      aggregateKey,
      payload: { n: i, key: aggregateKey, seq, at: new Date().toISOString() },
      headers: { scenario: prefix },
    }
  }

  async waitForCount(count: number, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (this.written.length < count) {
      if (Date.now() > deadline) throw new Error(`writer reached ${this.written.length} of ${count} events in ${timeoutMs} ms`)
      await new Promise((r) => setTimeout(r, 20))
    }
  }

  private async run(): Promise<void> {
    while (this.running) {
      const batch = [...this.injected.splice(0), ...Array.from({ length: this.plan.batchSize }, () => this.nextEvent())]
      await this.insertUntilCommitted(batch)
      await new Promise((r) => setTimeout(r, this.plan.intervalMs))
    }
  }

  private async insertUntilCommitted(batch: ReadonlyArray<EventSpec>): Promise<void> {
    while (!this.abandoned) {
      try {
        await insertEvents(this.db, batch)
        this.written.push(...batch)
        return
      } catch (e) {
        this.failedInserts++
        this.lastError = e instanceof Error ? e.message : String(e)
        await new Promise((r) => setTimeout(r, 100))
      }
    }
  }
}

/**
 * One INSERT for the batch, ids in array order; an existing dedup_key is a no-op. `->`
 * keeps a JSON null payload as jsonb 'null' (as the project's writer does).
 */
export const insertEvents = (db: Db, events: ReadonlyArray<EventSpec>) => {
  const docs = JSON.stringify(
    events.map((e) => ({
      dedup_key: e.dedupKey,
      event_type: e.eventType,
      aggregate_key: e.aggregateKey,
      payload: e.payload,
      headers: e.headers ?? {},
      traceparent: e.traceparent ?? null,
    })),
  )
  return db.run(
    (sql) => sql`
      INSERT INTO outbox_event (dedup_key, event_type, aggregate_key, payload, headers, traceparent)
      SELECT e.doc->>'dedup_key', e.doc->>'event_type', e.doc->>'aggregate_key', e.doc->'payload', e.doc->'headers', e.doc->>'traceparent'
        FROM jsonb_array_elements(${docs}::jsonb) WITH ORDINALITY AS e(doc, ord)
       ORDER BY e.ord
      ON CONFLICT (dedup_key) DO NOTHING`,
  )
}
