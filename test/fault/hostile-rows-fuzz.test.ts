/**
 * Hostile rows, the whole class: a seeded generator inserts rows by plain SQL (the README's own
 * path) in which every column the relay reads varies (NULL, empty, huge up to what PostgreSQL
 * takes, odd unicode, control characters, numbers at and past their range, infinite and far
 * dates, headers of every JSON shape, explicit duplicate event_ids), mixed with normal rows of
 * the same and other keys, against the real relay process, PostgreSQL and Kafka. Twice: with the
 * table's bounds as shipped (migration 7), and with them dropped (a table whose rows predate it).
 *
 * Each run asserts:
 * - every hostile row is refused at INSERT with a clear error (a data error: class 22, 23 or 54,
 *   and PostgreSQL's words), or settles SENT, or DEAD with a reason;
 *   except a row scheduled beyond the run (next_attempt_at or a lease far in the future: not
 *   due, by definition), which waits, and holds back only the later rows of its own key;
 * - no normal row waits on a hostile row of another key: every normal row not behind a waiting
 *   row of its own key is SENT and on its topic;
 * - no record is re-sent without a counted takeover.
 *
 * `FUZZ_SEED=n` replays one seed; `FUZZ_SEEDS=k` runs k seeds from FUZZ_FIRST_SEED (default: one
 * seed from the clock, printed); `FUZZ_HOSTILE_ROWS` and `FUZZ_NORMAL_ROWS` size a run.
 * The generator includes rows PostgreSQL refuses to mark (a 10 kB or 17 MiB event_type, attempts at
 * the integer limit: possible only with the bounds dropped), which settle DEAD `unmarkable` since a
 * refused mark costs only its row; `FUZZ_UNMARKABLE=0` leaves them out.
 */
import { describe, expect, it } from "vitest"
import { faultOfSqlState, sqlStateOf } from "../../src/domain/database-fault.ts"
import { ROW_CHECKS } from "../../src/outbox/row-limits-sql.ts"
import { sqlErrorMessage } from "../../src/outbox/sql-error.ts"
import { type EventSpec, insertEvents } from "../support/fault/event-writer.ts"
import type { Db } from "../support/fault/fault-db.ts"
import { readAll } from "../support/fault/kafka-readback.ts"
import { Scenario, stage } from "../support/fault/scenario.ts"
import { makeRng, type Rng } from "../support/simulation/random.ts"

const single = process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED)
const seedCount = Number(process.env.FUZZ_SEEDS ?? 1)
const firstSeed = Number(process.env.FUZZ_FIRST_SEED ?? Date.now() % 1_000_000)
const seeds = single !== undefined ? [single] : Array.from({ length: seedCount }, (_, i) => firstSeed + i)
const HOSTILE_ROWS = Number(process.env.FUZZ_HOSTILE_ROWS ?? 40)
const NORMAL_ROWS = Number(process.env.FUZZ_NORMAL_ROWS ?? 200)
const UNMARKABLE = process.env.FUZZ_UNMARKABLE !== "0"

const MiB17 = 17 * 1024 * 1024
const MAPPED = ["search_click", "ac_select"]
/** A run lasts well under this: a row scheduled past it is not due during the run. */
const FAR = "'2999-01-01'"

/** Text of `bytes` octets that PostgreSQL cannot compress (an index entry is stored as is). */
const incompressible = (bytes: number, salt: string) =>
  `left((SELECT string_agg(md5('${salt}' || g), '') FROM generate_series(1, ${Math.ceil(bytes / 32)}) g), ${bytes})`

const ODD = `'ü😀' || chr(8203) || '\u05d0' || chr(1) || chr(27) || chr(127)`

/** SQL expressions per column, drawn with weights: most rows stay mostly normal. */
type Choice = readonly [weight: number, sql: string, tags?: ReadonlyArray<Tag>]
type Tag = "waits" | "unmarkable" | "dropped-only"

const draw = (rng: Rng, choices: ReadonlyArray<Choice>): Choice => {
  const total = choices.reduce((n, c) => n + c[0], 0)
  let x = rng.next() * total
  for (const c of choices) {
    x -= c[0]
    if (x < 0) return c
  }
  return choices[choices.length - 1]!
}

interface HostileRow {
  readonly n: number
  readonly key: string | null
  readonly values: Readonly<Record<string, string>>
  readonly tags: ReadonlySet<Tag>
  readonly summary: string
}

const hostileRow = (rng: Rng, n: number, seed: number, duplicateEventId: string): HostileRow => {
  const base = `'fz-${seed}-${n}'`
  const key = rng.pick([null, "hk-0", "hk-1", "hk-2", "nk-0", "nk-1"])
  const keySql = key === null ? "NULL" : `'${key}'`

  const columns: Record<string, ReadonlyArray<Choice>> = {
    event_id: [
      [9, "DEFAULT"],
      [1, `'${duplicateEventId}'`],
    ],
    dedup_key: [
      [10, base],
      [1, "''"],
      [1, "'   '"],
      [1, "NULL"],
      [1, `${base} || ${ODD}`],
      [1, `${base} || chr(0)`],
      [1, `${base} || ${incompressible(1100, "d")}`],
      [1, `${base} || ${incompressible(3000, "d")}`],
      [1, `${base} || repeat('d', 150000)`],
      [0.2, `${base} || repeat('d', ${MiB17})`],
    ],
    event_type: [
      [10, `'${rng.pick(MAPPED)}'`],
      [2, "'order_refunded'"],
      [1, "''"],
      [1, "NULL"],
      [1, `'search_click' || ${ODD}`],
      [1, "repeat('e', 255)"],
      [1, "repeat('e', 256)"],
      [UNMARKABLE ? 1 : 0, incompressible(10_000, "e"), ["unmarkable", "dropped-only"]],
      [UNMARKABLE ? 0.2 : 0, `repeat('e', ${MiB17})`, ["unmarkable", "dropped-only"]],
    ],
    aggregate_key: [
      [10, keySql],
      [1, "''"],
      [1, ODD],
      [1, "repeat('k', 1025)"],
      [1, incompressible(3000, "k")],
      [1, "repeat('k', 150000)"],
    ],
    payload: [
      [6, `'{"n": ${n}}'`],
      [1, "'null'"],
      [1, "'1e308'"],
      [1, "'-0'"],
      [1, `'"${"\u00e9"}"'`],
      [1, `'[1, [2, [3, {"x": null}]]]'`],
      [1, `(repeat('[', 200) || repeat(']', 200))::jsonb`],
      [1, `'{"a": "\\u0000"}'`],
      [1, "NULL"],
      [1, "jsonb_build_object('blob', repeat('p', 2000000))"],
      [0.2, `jsonb_build_object('blob', repeat('p', ${MiB17}))`],
    ],
    headers: [
      [8, "'{}'"],
      [1, `'{"tenant": "acme"}'`],
      [1, `'{"n": 1, "b": true}'`],
      [1, "'[]'"],
      [1, `'"text"'`],
      [1, "'null'"],
      [1, `'{"o": {"p": "q"}}'`],
      [1, `'{"DEDUP_KEY": "spoof", "dlq.reason": "spoof", "Event_Id": "spoof"}'`],
      [1, "jsonb_build_object('h', repeat('h', 2000000))"],
      [1, "NULL"],
    ],
    request_id: [
      [8, "NULL"],
      [1, "''"],
      [1, ODD],
      [1, "repeat('r', 256)"],
      [1, "repeat('r', 257)"],
      [0.2, `repeat('r', ${MiB17})`],
    ],
    traceparent: [
      [8, "NULL"],
      [2, "'00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'"],
      [1, "'garbage'"],
      [1, "repeat('t', 257)"],
      [0.2, `repeat('t', ${MiB17})`],
    ],
    attempts: [
      [10, "0"],
      [1, "9"],
      [1, "10"],
      [1, "1000000"],
      [1, "1000001"],
      [1, "-1"],
      [1, "NULL"],
      [UNMARKABLE ? 1 : 0, "2147483647", ["unmarkable", "dropped-only"]],
    ],
    status: [
      [5, "'NEW'"],
      [2, "'FAILED'"],
    ],
    next_attempt_at: [
      [10, "now()"],
      [1, "now() + interval '2 seconds'"],
      [1, "'4713-01-01 BC'"],
      [1, "'-infinity'"],
      [1, "'infinity'", ["waits"]],
      [1, FAR, ["waits"]],
      [1, "NULL"],
    ],
    lease: [
      [10, "NULL, NULL"],
      [1, "'ghost', now() - interval '1 second'"],
      [1, "'ghost', now() + interval '2 seconds'"],
      [1, `repeat('g', ${MiB17}), now() - interval '1 second'`],
      [1, `'ghost', ${FAR}`, ["waits"]],
      [1, "'ghost', 'infinity'", ["waits"]],
      [1, `NULL, ${FAR}`, ["waits"]],
    ],
    // What the relay writes itself, and now reads back for a row waiting for its dead letter.
    dead: [
      [10, "NULL, NULL"],
      [1, "'message_too_large', 'an earlier error'"],
      [1, "'no_such_reason', NULL"],
      [1, `repeat('z', 100000), repeat('l', ${MiB17})`],
      [1, `NULL, repeat('l', ${MiB17})`],
    ],
  }
  // One to three columns hostile, the others as a service writes them: a row with every column
  // at an extreme is refused for its first one, and would hide what the others do.
  const hostileColumns = new Set<string>()
  const names = Object.keys(columns)
  for (let k = rng.int(1, 3); hostileColumns.size < k; ) hostileColumns.add(rng.pick(names))
  const values: Record<string, string> = {}
  const tags = new Set<Tag>()
  const unusual: Array<string> = []
  for (const [column, choices] of Object.entries(columns)) {
    const [, sql, t] = hostileColumns.has(column) ? draw(rng, choices.slice(1)) : choices[0]!
    values[column] = sql
    for (const tag of t ?? []) tags.add(tag)
    if (sql !== choices[0]![1]) unusual.push(`${column}=${sql.length > 60 ? `${sql.slice(0, 57)}...` : sql}`)
  }
  return { n, key, values, tags, summary: unusual.join(" ") || "all normal" }
}

const insertHostile = (row: HostileRow) => {
  const v = row.values
  return `INSERT INTO outbox_event (event_id, dedup_key, event_type, aggregate_key, payload, headers, request_id, traceparent,
                                    attempts, status, next_attempt_at, locked_by, locked_until, dead_reason, last_error)
          VALUES (${v.event_id}, ${v.dedup_key}, ${v.event_type}, ${v.aggregate_key}, ${v.payload}, ${v.headers}, ${v.request_id},
                  ${v.traceparent}, ${v.attempts}, ${v.status}, ${v.next_attempt_at}, ${v.lease}, ${v.dead})
          RETURNING id::text AS id`
}

interface Inserted {
  readonly row: HostileRow
  readonly id: string
}

interface Refused {
  readonly row: HostileRow
  readonly sqlState: string | undefined
  readonly message: string
}

const dropRowLimits = (db: Db) =>
  db.run((sql) => sql.unsafe(`ALTER TABLE outbox_event ${ROW_CHECKS.map(([name]) => `DROP CONSTRAINT ${name}`).join(", ")}`))

interface RowState {
  readonly id: string
  readonly dedup_key: string
  /** md5 of the aggregate_key: long keys that share a prefix stay apart. */
  readonly key_hash: string | null
  readonly status: string
  readonly dead_reason: string | null
  readonly last_error: string | null
}

const readRows = (db: Db) =>
  db.run(
    (sql) => sql<RowState>`
      SELECT id::text AS id, left(dedup_key, 300) AS dedup_key, md5(aggregate_key) AS key_hash, status, dead_reason,
             left(last_error, 300) AS last_error
        FROM outbox_event ORDER BY id`,
  )

const runSeed = async (seed: number, mode: "shipped" | "dropped") => {
  console.log(`[fuzz] seed=${seed} mode=${mode} hostile=${HOSTILE_ROWS} normal=${NORMAL_ROWS} (replay: FUZZ_SEED=${seed})`)
  const s = new Scenario(`fuzz ${mode} seed ${seed}`)
  const st = await stage(s, { label: `fuzz-${mode}`, mappedTypes: MAPPED })
  if (mode === "dropped") await dropRowLimits(st.db)
  const rng = makeRng(seed)
  const duplicateEventId = "01a20000-0000-7000-8000-00000000f022"

  const normal = (from: number, count: number): ReadonlyArray<EventSpec> =>
    Array.from({ length: count }, (_, i) => ({
      dedupKey: `normal-${seed}-${from + i}`,
      eventType: rng.pick(MAPPED),
      aggregateKey: rng.pick([null, "nk-0", "nk-1", "nk-2", "nk-3", "hk-0", "hk-1", "hk-2"]),
      payload: { i: from + i },
    }))
  const inserted: Array<Inserted> = []
  const refused: Array<Refused> = []
  const normalRows: Array<EventSpec> = []
  const chunk = Math.max(1, Math.floor(NORMAL_ROWS / Math.max(1, HOSTILE_ROWS)))
  for (let n = 0; n < HOSTILE_ROWS; n++) {
    const batch = normal(normalRows.length, chunk)
    await insertEvents(st.db, batch)
    normalRows.push(...batch)
    const row = hostileRow(rng, n, seed, duplicateEventId)
    const result = await st.db
      .run((sql) => sql.unsafe<{ id: string }>(insertHostile(row)))
      .then(
        (rows) => ({ ok: true as const, id: rows[0]!.id }),
        (e: Parameters<typeof sqlErrorMessage>[0]) => ({ ok: false as const, sqlState: sqlStateOf(e), message: sqlErrorMessage(e) }),
      )
    if (result.ok) inserted.push({ row, id: result.id })
    else refused.push({ row, sqlState: result.sqlState, message: result.message })
  }
  const tail = normal(normalRows.length, Math.max(0, NORMAL_ROWS - normalRows.length))
  if (tail.length > 0) await insertEvents(st.db, tail)
  normalRows.push(...tail)

  // Every refusal is PostgreSQL's clear word on the values: a data error, never a crash.
  for (const r of refused) {
    expect(faultOfSqlState(r.sqlState), `${r.row.summary}: ${r.sqlState} ${r.message}`).toBe("data")
    expect(r.message.length).toBeGreaterThan(10)
  }
  // With the bounds as shipped, what only a table without them takes is refused.
  if (mode === "shipped") for (const r of inserted) expect(r.row.tags.has("dropped-only"), r.row.summary).toBe(false)

  const waiting = inserted.filter((r) => r.row.tags.has("waits"))
  const heldIds = new Set(waiting.map((r) => r.id))
  const mustSettle = new Set(inserted.filter((r) => !r.row.tags.has("waits")).map((r) => r.id))
  // The first waiting row of each key, as the table has it.
  const firstHeld = new Map<string, bigint>()
  for (const r of await readRows(st.db)) {
    if (!heldIds.has(r.id) || r.key_hash === null) continue
    const known = firstHeld.get(r.key_hash)
    if (known === undefined || BigInt(r.id) < known) firstHeld.set(r.key_hash, BigInt(r.id))
  }
  /** Behind a waiting row of its own key: it waits too, by per-key order. */
  const isHeld = (row: RowState) =>
    heldIds.has(row.id) || (row.key_hash !== null && firstHeld.has(row.key_hash) && BigInt(row.id) > firstHeld.get(row.key_hash)!)

  const relay = s.startRelay(`fuzz-${mode}-${seed}`, {
    ...st.relayEnv,
    // A claim that prints several 17 MiB values takes seconds on a busy 2-core machine.
    LEASE_MS: "10000",
  })
  const deadline = Date.now() + 90_000
  let rows = await readRows(st.db)
  const unsettled = () => rows.filter((r) => (r.status === "NEW" || r.status === "FAILED") && !isHeld(r))
  while (unsettled().length > 0 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 250))
    rows = await readRows(st.db)
  }
  const byId = new Map(rows.map((r) => [r.id, r]))

  // Every hostile row that was due settled, SENT or DEAD with a reason.
  for (const r of inserted) {
    const state = byId.get(r.id)!
    if (mustSettle.has(r.id) && !isHeld(state)) {
      expect(
        state.status === "SENT" || (state.status === "DEAD" && (state.dead_reason ?? "") !== ""),
        `row ${r.id} ${r.row.summary}: ${JSON.stringify(state)}`,
      ).toBe(true)
    } else {
      expect(state.status === "NEW" || state.status === "FAILED", `row ${r.id} is not due yet: ${r.row.summary}`).toBe(true)
    }
  }
  // No normal row waits on a hostile row of another key.
  const normalKeys = new Set(normalRows.map((e) => e.dedupKey))
  const normalStates = rows.filter((r) => normalKeys.has(r.dedup_key))
  expect(normalStates).toHaveLength(normalRows.length)
  for (const r of normalStates) {
    if (isHeld(r)) expect(r.status, `normal row ${r.id} behind a waiting row of its key`).toBe("NEW")
    else expect(r.status, `normal row ${r.id} ${r.last_error ?? ""}`).toBe("SENT")
  }

  // Read back with an independent consumer: SENT rows are on their topics, and no record is
  // re-sent without a counted takeover.
  const messages = await readAll(st.brokers, st.topics.all)
  const onTopics = messages.filter((m) => m.topic !== st.topics.dlq)
  const copies = new Map<string, number>()
  for (const m of onTopics) {
    const id = `${m.headers.event_id}/${m.headers.dedup_key}`
    copies.set(id, (copies.get(id) ?? 0) + 1)
  }
  for (const r of normalStates.filter((n) => n.status === "SENT")) {
    expect(
      onTopics.some((m) => m.headers.dedup_key === r.dedup_key),
      `normal row ${r.id} on Kafka`,
    ).toBe(true)
  }
  const resent = [...copies.values()].reduce((n, c) => n + Math.max(0, c - 1), 0)
  const takeovers = relay.linesWith("took over rows whose lease expired").reduce((n, l) => n + (Number(l.count) || 0), 0)
  expect(resent, `re-sent records ${resent}, counted takeovers ${takeovers}`).toBeLessThanOrEqual(takeovers)
  expect(relay.linesWith("relay loop failed"), "the loop never failed").toEqual([])

  await relay.stop(5_000)
  const settled = inserted.filter((r) => mustSettle.has(r.id))
  console.log(
    `[fuzz] seed=${seed} mode=${mode}: ${refused.length} refused at INSERT, ${settled.filter((r) => byId.get(r.id)?.status === "SENT").length} SENT, ` +
      `${settled.filter((r) => byId.get(r.id)?.status === "DEAD").length} DEAD ` +
      `(${[...new Set(settled.map((r) => byId.get(r.id)?.dead_reason).filter((x) => x))].join(",")}), ${waiting.length} not due; ` +
      `normal ${normalStates.filter((r) => r.status === "SENT").length}/${normalRows.length} SENT; re-sent ${resent}, takeovers ${takeovers}; ` +
      `${s.elapsedSeconds().toFixed(1)}s`,
  )
}

describe("hostile rows, fuzzed against the real relay, PostgreSQL and Kafka", () => {
  for (const mode of ["shipped", "dropped"] as const) {
    it(
      `with the table's bounds ${mode === "shipped" ? "as shipped" : "dropped"}: every row is refused, settles, or waits only for its own key`,
      async () => {
        for (const seed of seeds) await runSeed(seed, mode)
      },
      60_000 + seeds.length * 150_000,
    )
  }
})
