/**
 * `npm run bench`: the relay against its own ceilings on this machine. Prints a table and
 * writes bench/results/<date>.json. `--smoke` runs tiny sizes (CI), `--full` the large ones.
 * `--drain-only`: the ceilings and one single-instance drain, nothing else (minutes, for
 * iterating on the relay's cost). BENCH_RELAY=js runs the compiled dist/cli/main.js
 * (scripts/build-lib.sh) instead of the TypeScript sources, BENCH_RELAY=bundle the bundle
 * (scripts/build-bundle.sh); BENCH_RELAY_NODE_OPTIONS is the
 * relay's NODE_OPTIONS (e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`).
 *
 * Before/after in one run (with --drain-only): `--compare=<dir>` drains alternately with the
 * relay of another checkout (a copy of an earlier commit, say) and this one; `--variant=<spec>`
 * (repeatable) with any relays, spec `ts|js|bundle[@<dir>][ <NODE_OPTIONS>][ NAME=value…]`, e.g.
 * `--variant=ts --variant=js "--variant=js --max-semi-space-size=4" "--variant=ts BATCH_SIZE=1000"`. Each `--repeat=<n>` times,
 * interleaved, so every variant sees the same minutes of a noisy machine.
 */
import { execFileSync } from "node:child_process"
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs"
import { cpus, totalmem } from "node:os"
import { Effect } from "effect"
import { kafkaCeiling, postgresCeiling, postgresMinimalCeiling } from "./scenarios/ceilings.ts"
import { type DrainResult, drain } from "./scenarios/drain.ts"
import { LEVERS, type LeverResult, postgresLever } from "./scenarios/postgres-levers.ts"
import { soak } from "./scenarios/soak.ts"
import { type SteadyResult, steadyRate } from "./scenarios/steady-rate.ts"
import { dropScenario, freshScenario, infrastructure } from "./support/bench-env.ts"
import { compiledMain, defaultVariant, type RelayVariant } from "./support/relay-process.ts"
import { seedRows } from "./support/seed.ts"

const args = new Set(process.argv.slice(2))
const mode = args.has("--smoke") ? "smoke" : args.has("--full") ? "full" : "default"
const soakMinutes = args.has("--soak") ? 10 : 0
const drainOnly = args.has("--drain-only")
const option = (name: string) =>
  process.argv
    .slice(2)
    .find((a) => a.startsWith(`--${name}=`))
    ?.slice(name.length + 3)
const compareWith = option("compare")
const repeat = Number(option("repeat") ?? 1)
const parseVariant = (spec: string): RelayVariant & { name: string } => {
  const [head = "ts", ...rest] = spec.trim().split(/\s+/)
  const [kind, root] = head.split("@")
  const form = kind === "js" || kind === "bundle" ? kind : "ts"
  // NAME=value words are relay settings, the others node options.
  const isSetting = (word: string) => /^[A-Z][A-Z0-9_]*=/.test(word)
  const settings = Object.fromEntries(rest.filter(isSetting).map((w) => [w.slice(0, w.indexOf("=")), w.slice(w.indexOf("=") + 1)]))
  return { name: spec.trim(), form, root: root || undefined, nodeOptions: rest.filter((w) => !isSetting(w)).join(" "), settings }
}
const variants =
  compareWith !== undefined
    ? [
        { ...defaultVariant(), root: compareWith, name: "before" },
        { ...defaultVariant(), name: "after" },
      ]
    : process.argv
        .slice(2)
        .filter((a) => a.startsWith("--variant="))
        .map((a) => parseVariant(a.slice("--variant=".length)))
// A compiled relay must exist before minutes of ceilings are spent (`npm pack`, as the tests run
// it, rebuilds dist/ and leaves no bundle).
for (const v of variants.length === 0 ? [defaultVariant()] : variants) {
  if (v.form !== "js" && v.form !== "bundle") continue
  const main = compiledMain(v)
  if (!existsSync(main)) {
    process.stderr.write(`bench: ${main} is missing; run scripts/${v.form === "bundle" ? "build-bundle" : "build-lib"}.sh first\n`)
    process.exit(2)
  }
}
const sizes = {
  smoke: { ceiling: 5_000, drain: 5_000, history: 20_000, steadySeconds: 3, rates: [1_000], perTx: [10] },
  default: {
    ceiling: 100_000,
    drain: 100_000,
    history: 1_000_000,
    steadySeconds: 15,
    rates: [1_000, 5_000, 10_000, 20_000],
    perTx: [1, 10],
  },
  full: {
    ceiling: 200_000,
    drain: 1_000_000,
    history: 5_000_000,
    steadySeconds: 30,
    rates: [1_000, 5_000, 10_000, 20_000],
    perTx: [1, 10],
  },
}[mode]
const PARTITIONS = 6

/** The middle value; of an even count, the mean of the two middle ones. */
const median = (xs: ReadonlyArray<number>) => {
  const sorted = [...xs].sort((a, b) => a - b)
  const mid = sorted.length / 2
  return Number.isInteger(mid) ? (sorted[mid - 1]! + sorted[mid]!) / 2 : sorted[Math.floor(mid)]!
}
const log = (s: string) => process.stderr.write(`bench: ${s}\n`)
const fmt = (n: number, digits = 0) => n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits })

const scenario = <A>(f: (env: Effect.Success<ReturnType<typeof freshScenario>>) => Effect.Effect<A, unknown>) =>
  Effect.acquireUseRelease(freshScenario(infrastructure(), PARTITIONS), f, dropScenario)

// `--postgres-levers`: PostgreSQL's share under schema changes, each lever `--repeat` times, interleaved.
if (args.has("--postgres-levers")) {
  // `--lever=<text>`: only the levers whose name contains it (repeatable), e.g. a quick look at one.
  const only = process.argv
    .slice(2)
    .filter((a) => a.startsWith("--lever="))
    .map((a) => a.slice("--lever=".length))
  const levers = only.length === 0 ? LEVERS : LEVERS.filter((l) => only.some((o) => l.name.includes(o)))
  const results: Array<LeverResult> = []
  for (let i = 0; i < repeat; i++) {
    for (const lever of levers) {
      const r = await Effect.runPromise(scenario((env) => postgresLever(env, sizes.ceiling, lever)))
      log(
        `${r.lever}: ${fmt(r.eventsPerSecond)} ev/s, ${fmt(r.postgresCpuMicrosPerEvent, 1)} µs/event, HOT ${fmt(r.hotUpdateShare * 100)} %, ${fmt(r.meanRowsPerClaim, 1)} rows/claim (${r.shortClaims} of ${r.claims} claims short)`,
      )
      results.push(r)
    }
  }
  const date = new Date().toISOString()
  const file = new URL(`./results/${date.slice(0, 19).replaceAll(":", "-")}-postgres-levers.json`, import.meta.url)
  writeFileSync(file, `${JSON.stringify({ date, events: sizes.ceiling, results }, null, 2)}\n`)
  process.stdout.write(`\nPostgreSQL levers: the relay's claim + SENT mark of ${fmt(sizes.ceiling)} rows, median of ${repeat}\n\n`)
  const width = Math.max(...LEVERS.map((l) => l.name.length))
  for (const lever of levers) {
    const mine = results.filter((r) => r.lever === lever.name)
    process.stdout.write(
      `${lever.name.padEnd(width)} ${fmt(median(mine.map((r) => r.eventsPerSecond))).padStart(7)} ev/s  ${fmt(median(mine.map((r) => r.postgresCpuMicrosPerEvent)), 1).padStart(6)} µs/event  HOT ${fmt(median(mine.map((r) => r.hotUpdateShare * 100))).padStart(3)} % of updates  ${fmt(median(mine.map((r) => r.meanRowsPerClaim)), 1)} rows/claim\n`,
    )
  }
  process.stdout.write(`\nwritten to ${file.pathname}\n`)
  process.exit(0)
}

// `--soak-only`: just the soak (e.g. against a PostgreSQL given by DATABASE_URL whose autovacuum is on).
if (args.has("--soak-only")) {
  const r = await Effect.runPromise(scenario((env) => soak(env, { minutes: 10, rate: 2_000, retention: "1m" })))
  process.stdout.write(`${JSON.stringify(r, null, 2)}\n`)
  process.exit(0)
}

const program = Effect.gen(function* () {
  log(`mode ${mode}; sizes ${JSON.stringify(sizes)}`)
  const kafkaAlone = yield* scenario((env) => kafkaCeiling(env, sizes.ceiling))
  const kafka = kafkaAlone.eventsPerSecond
  log(`kafka ceiling ${fmt(kafka)} ev/s, kafkajs ${fmt(kafkaAlone.cpuMicrosPerEvent, 1)} µs CPU/event`)
  const postgres = yield* scenario((env) => postgresCeiling(env, sizes.ceiling))
  log(`postgres ceiling ${fmt(postgres)} ev/s`)
  const postgresMinimal = yield* scenario((env) => postgresMinimalCeiling(env, sizes.ceiling))
  log(`postgres minimal ${fmt(postgresMinimal)} ev/s`)
  const ceiling = Math.min(kafka, postgres)

  const drains: Array<DrainResult & { ratioToCeiling: number; label: string }> = []
  const runs: Array<{ instances: number; variant?: RelayVariant; name: string }> =
    variants.length === 0
      ? (drainOnly ? [1] : [1, 2]).flatMap((instances) => Array.from({ length: repeat }, () => ({ instances, name: "" })))
      : Array.from({ length: repeat }, () => variants.map((variant) => ({ instances: 1, variant, name: ` [${variant.name}]` }))).flat()
  for (const { instances, variant, name } of runs) {
    const r = yield* scenario((env) => drain(env, { events: sizes.drain, instances, ...(variant === undefined ? {} : { variant }) }))
    drains.push({ ...r, ratioToCeiling: r.eventsPerSecond / ceiling, label: `drain ${fmt(sizes.drain)}, ${instances} instance(s)${name}` })
    log(
      `${drains.at(-1)!.label}: ${fmt(r.eventsPerSecond)} ev/s; µs/event relay ${fmt(r.cpuMicrosPerEvent, 1)} postgres ${fmt(r.postgresCpuMicrosPerEvent, 1)} broker ${fmt(r.brokerCpuMicrosPerEvent, 1)}`,
    )
  }
  if (drainOnly)
    return {
      kafka,
      kafkaAlone,
      postgres,
      postgresMinimal,
      ceiling,
      drains,
      history: undefined,
      historyCost: undefined,
      steady: [],
      soak: undefined,
    }
  const history = yield* scenario((env) =>
    Effect.gen(function* () {
      // No VACUUM between history and backlog: after one, the free-space map offers every
      // history page's room above the fillfactor reserve (exactly one row each), so the backlog
      // would land one row per page over 100k pages, and the claim's row locks would each dirty a
      // page (a full-page image, a read and an eviction at 128 MB shared_buffers): a seeding
      // artefact measured at 25-33 % of the drain, not a cost of the history (README, History).
      yield* seedRows(env.databaseUrl, { count: sizes.history, status: "SENT", keys: 1000, prefix: "history", settle: false })
      return yield* drain(env, { events: sizes.drain, instances: 1 })
    }),
  )
  const historyCost = 1 - history.eventsPerSecond / drains[0]!.eventsPerSecond
  log(`drain with ${fmt(sizes.history)} SENT rows: ${fmt(history.eventsPerSecond)} ev/s (${fmt(historyCost * 100, 1)} % slower)`)

  const steady: Array<SteadyResult> = []
  for (const perTx of sizes.perTx) {
    for (const rate of sizes.rates) {
      for (const notify of [true, false]) {
        const r = yield* scenario((env) => steadyRate(env, { rate, perTx, seconds: sizes.steadySeconds, notify }))
        steady.push(r)
        log(
          `steady ${fmt(rate)}/s, ${perTx}/tx, notify ${notify}: kept ${fmt(r.keptPerSecond)}/s, p50 ${fmt(r.p50Ms, 1)} p99 ${fmt(r.p99Ms, 1)} ms`,
        )
      }
    }
  }
  const soakResult =
    soakMinutes > 0 ? yield* scenario((env) => soak(env, { minutes: soakMinutes, rate: 2_000, retention: "1m" })) : undefined
  return { kafka, kafkaAlone, postgres, postgresMinimal, ceiling, drains, history, historyCost, steady, soak: soakResult }
})

const versions = () => {
  const pkg = (name: string) =>
    (JSON.parse(readFileSync(new URL(`../node_modules/${name}/package.json`, import.meta.url), "utf8")) as { version: string }).version
  const java = (() => {
    try {
      return execFileSync("java", ["-version"], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim() || "?"
    } catch (e) {
      return String((e as { stderr?: string }).stderr ?? "?").split("\n")[0]
    }
  })()
  return { node: process.version, effect: pkg("effect"), kafkajs: pkg("kafkajs"), kafka: "3.9.2", java }
}

const r = await Effect.runPromise(program)
const date = new Date().toISOString()
// With variants, the figures are the last variant's last drain; every drain is in `drains`.
const d1 = variants.length === 0 ? r.drains[0]! : r.drains.at(-1)!
const result = {
  date,
  mode: drainOnly ? `${mode}-drain-only` : mode,
  relay: { ts: "src/cli/main.ts (type stripping)", js: "compiled dist/cli/main.js", bundle: "bundle dist/bundle/main.js" }[
    defaultVariant().form ?? "ts"
  ],
  machine: { cpu: cpus()[0]?.model ?? "?", cores: cpus().length, memoryGb: Math.round(totalmem() / 2 ** 30) },
  versions: versions(),
  settings: { batchSize: 500, pollIntervalMs: 500, partitions: PARTITIONS, payloadBytes: 200, sizes },
  ceilings: {
    kafka_events_per_s: r.kafka,
    kafkajs_cpu_us_per_event: r.kafkaAlone.cpuMicrosPerEvent,
    postgres_events_per_s: r.postgres,
    postgres_minimal_events_per_s: r.postgresMinimal,
  },
  // The single-instance drain, first SENT → last SENT.
  variants: variants.length === 0 ? undefined : variants,
  drain_events_per_s: d1.eventsPerSecond,
  drain_from_start_events_per_s: d1.fromStartEventsPerSecond,
  ratio_to_ceiling: d1.ratioToCeiling,
  ratio_to_kafka_ceiling: d1.eventsPerSecond / r.kafka,
  machine_cpu_us_per_event: d1.machineCpuMicrosPerEvent,
  relay_cpu_us_per_event: d1.cpuMicrosPerEvent,
  postgres_cpu_us_per_event: d1.postgresCpuMicrosPerEvent,
  broker_cpu_us_per_event: d1.brokerCpuMicrosPerEvent,
  relay_peak_rss_mb: d1.peakRssMb,
  drains: r.drains,
  history:
    r.history === undefined
      ? undefined
      : { sent_rows: sizes.history, drain_events_per_s: r.history.eventsPerSecond, cost_ratio: r.historyCost },
  steady: r.steady,
  soak: r.soak,
}
mkdirSync(new URL("./results/", import.meta.url), { recursive: true })
const suffix = `${mode === "default" ? "" : `-${mode}`}${drainOnly ? "-drain" : ""}`
const file = new URL(`./results/${date.slice(0, 19).replaceAll(":", "-")}${suffix}.json`, import.meta.url)
writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`)

const rows: Array<[string, string, string]> = [
  ["Kafka alone (ceiling)", `${fmt(r.kafka)} ev/s`, `kafkajs ${fmt(r.kafkaAlone.cpuMicrosPerEvent, 1)} µs CPU/event (the relay's floor)`],
  ["PostgreSQL claim+mark alone (ceiling)", `${fmt(r.postgres)} ev/s`, ""],
  ["PostgreSQL minimal (reference)", `${fmt(r.postgresMinimal)} ev/s`, "lock, read, mark SENT in one transaction; no lease"],
  ...r.drains.flatMap(
    (d): Array<[string, string, string]> => [
      [
        d.label,
        `${fmt(d.eventsPerSecond)} ev/s`,
        `first → last SENT; ${fmt(d.fromStartEventsPerSecond)} ev/s from process start; ${fmt(d.ratioToCeiling, 2)} × ceiling, ${fmt(d.eventsPerSecond / r.kafka, 2)} × Kafka alone`,
      ],
      [
        "  CPU µs per event",
        `${fmt(d.machineCpuMicrosPerEvent, 1)} machine`,
        `relay ${fmt(d.cpuMicrosPerEvent, 1)} (${fmt(d.relayTotalCpuMicrosPerEvent, 1)} with start-up), PostgreSQL ${fmt(d.postgresCpuMicrosPerEvent, 1)} (backends ${fmt(d.postgresBackendsCpuMicrosPerEvent, 1)}), broker ${fmt(d.brokerCpuMicrosPerEvent, 1)}`,
      ],
      ["  relay peak RSS", `${fmt(d.peakRssMb)} MB`, ""],
    ],
  ),
  ...(r.history === undefined || r.historyCost === undefined
    ? []
    : [
        [
          `drain with ${fmt(sizes.history)} SENT rows`,
          `${fmt(r.history.eventsPerSecond)} ev/s`,
          `${fmt(r.historyCost * 100, 1)} % slower than empty`,
        ] as [string, string, string],
      ]),
  ...r.steady.map((s): [string, string, string] => [
    `steady ${fmt(s.rate)}/s, ${s.perTx}/tx, NOTIFY ${s.notify ? "on" : "off"}`,
    `${fmt(s.keptPerSecond)} ev/s kept`,
    `p50 ${fmt(s.p50Ms, 1)} / p95 ${fmt(s.p95Ms, 1)} / p99 ${fmt(s.p99Ms, 1)} ms; backlog at end ${fmt(s.backlogAtEnd)}`,
  ]),
]
if (r.soak !== undefined) {
  rows.push([
    `soak ${r.soak.minutes} min at ${fmt(r.soak.rate)}/s, RETENTION=${r.soak.retention}`,
    `${fmt(r.soak.lastMb, 1)} MB at end`,
    `peak ${fmt(r.soak.peakMb, 1)} MB; growth over the second half ${fmt(r.soak.secondHalfGrowthMb, 1)} MB`,
  ])
}
if (variants.length > 0) {
  for (const v of variants) {
    const of = (f: (d: DrainResult) => number, digits: number) =>
      fmt(median(r.drains.filter((d) => d.label.endsWith(`[${v.name}]`)).map(f)), digits)
    rows.push(
      [
        `median of ${repeat} [${v.name}]`,
        `${of((d) => d.eventsPerSecond, 0)} ev/s`,
        `${of((d) => d.fromStartEventsPerSecond, 0)} ev/s from start; RSS ${of((d) => d.peakRssMb, 0)} MB`,
      ],
      [
        "  CPU µs per event",
        `${of((d) => d.machineCpuMicrosPerEvent, 1)} machine`,
        `relay ${of((d) => d.cpuMicrosPerEvent, 1)} (${of((d) => d.relayTotalCpuMicrosPerEvent, 1)} with start-up), PostgreSQL ${of((d) => d.postgresCpuMicrosPerEvent, 1)}, broker ${of((d) => d.brokerCpuMicrosPerEvent, 1)}`,
      ],
    )
  }
}
const w0 = Math.max(...rows.map((x) => x[0].length))
const w1 = Math.max(...rows.map((x) => x[1].length))
process.stdout.write(`\noutbox-relay bench (${mode}) — ${result.machine.cpu}, ${result.machine.cores} cores\n\n`)
for (const [a, b, c] of rows) process.stdout.write(`${a.padEnd(w0)}  ${b.padStart(w1)}  ${c}\n`)
process.stdout.write(`\nwritten to ${file.pathname}\n`)
