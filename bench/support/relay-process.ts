/**
 * A relay as users run it (`bin/outbox-relay run` in its own process, or the compiled
 * dist/cli/main.js with BENCH_RELAY=js, or the bundle with BENCH_RELAY=bundle), with its CPU
 * time and peak memory read from /proc.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { appendFileSync, readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { Effect } from "effect"

const BIN = fileURLToPath(new URL("../../bin/outbox-relay", import.meta.url))
const ROOT = fileURLToPath(new URL("../..", import.meta.url)).replace(/\/$/, "")
const CLOCK_TICKS_PER_S = 100

export interface RelayProcess {
  readonly child: ChildProcess
  /** Epoch ms at which the process was spawned. */
  readonly spawnedAt: number
  /** Epoch ms at which the relay logged "relay started". */
  readonly startedAt: number
  /** Its CPU seconds by then: loading modules and connecting, not relaying. */
  readonly cpuAtStart: number
}

export interface ProcessCost {
  readonly cpuSeconds: number
  readonly peakRssMb: number
}

/** utime + stime and VmHWM of a live process. */
export const processCost = (pid: number): ProcessCost => {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
  const ticks = Number(fields[11]) + Number(fields[12])
  const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))
  return { cpuSeconds: ticks / CLOCK_TICKS_PER_S, peakRssMb: Number(hwm?.[1] ?? 0) / 1024 }
}

/**
 * How a relay process is run: from which checkout (`root`, default this one; an earlier
 * commit's copy for before/after runs), as TypeScript sources (type stripping) or the compiled
 * dist/cli/main.js, with which NODE_OPTIONS, and which settings over the scenario's own.
 */
export interface RelayVariant {
  readonly root?: string | undefined
  /** ts: the sources (type stripping); js: dist/cli/main.js (scripts/build-lib.sh); bundle: dist/bundle/main.js (scripts/build-bundle.sh). */
  readonly form?: "ts" | "js" | "bundle" | undefined
  readonly nodeOptions?: string | undefined
  /** Relay settings (BATCH_SIZE=1000, say) that override the scenario's. */
  readonly settings?: Readonly<Record<string, string>> | undefined
}

/** Defaults from BENCH_RELAY=ts|js|bundle and BENCH_RELAY_NODE_OPTIONS. */
export const defaultVariant = (): RelayVariant => ({
  form: process.env.BENCH_RELAY === "js" || process.env.BENCH_RELAY === "bundle" ? process.env.BENCH_RELAY : "ts",
  nodeOptions: process.env.BENCH_RELAY_NODE_OPTIONS ?? "",
})

/** The compiled entry point a `js` or `bundle` variant runs. */
export const compiledMain = (variant: RelayVariant): string =>
  `${variant.root ?? ROOT}/${variant.form === "bundle" ? "dist/bundle/main.js" : "dist/cli/main.js"}`

export const startRelay = (env: Record<string, string>, variant: RelayVariant = defaultVariant()) =>
  Effect.acquireRelease(
    Effect.callback<RelayProcess, Error>((resume) => {
      const spawnedAt = Date.now()
      const bin = variant.root === undefined ? BIN : `${variant.root}/bin/outbox-relay`
      const compiled = compiledMain(variant)
      // The compiled relay runs under this node directly, its options on the command line (V8
      // flags such as --trace-gc are refused in NODE_OPTIONS); the sources through bin/outbox-relay.
      const nodeOptions = (variant.nodeOptions ?? "").split(/\s+/).filter((o) => o !== "")
      const [command, args] =
        variant.form === "js" || variant.form === "bundle" ? [process.execPath, [...nodeOptions, compiled, "run"]] : [bin, ["run"]]
      const child = spawn(command, args, {
        env: {
          PATH: process.env.PATH ?? "",
          NODE_OPTIONS: variant.form === "js" || variant.form === "bundle" ? "" : (variant.nodeOptions ?? ""),
          LOG_FORMAT: "json",
          LOG_LEVEL: "info",
          HTTP_PORT: "0",
          ...env,
          ...variant.settings,
        },
        stdio: ["ignore", "pipe", "pipe"],
      })
      let buffered = ""
      let errors = ""
      const timer = setTimeout(() => resume(Effect.fail(new Error(`relay did not start within 30 s:\n${errors}`))), 30_000)
      child.stderr?.on("data", (d: Buffer) => {
        errors = (errors + d.toString()).slice(-4000)
      })
      // BENCH_RELAY_LOG=<file>: the relay's output kept (with --trace-gc in its NODE_OPTIONS, say).
      const keep = process.env.BENCH_RELAY_LOG
      child.stdout?.on("data", (d: Buffer) => {
        if (keep !== undefined) appendFileSync(keep, d)
        buffered += d.toString()
        for (let nl = buffered.indexOf("\n"); nl >= 0; nl = buffered.indexOf("\n")) {
          const line = buffered.slice(0, nl)
          buffered = buffered.slice(nl + 1)
          if (line.includes('"relay started"')) {
            clearTimeout(timer)
            resume(
              Effect.succeed({
                child,
                spawnedAt,
                startedAt: Date.parse((JSON.parse(line) as { timestamp: string }).timestamp),
                cpuAtStart: processCost(child.pid!).cpuSeconds,
              }),
            )
          } else if (line.includes('"level":"error"')) {
            errors = (errors + line).slice(-4000)
          }
        }
      })
      child.on("exit", (code) => {
        clearTimeout(timer)
        resume(Effect.fail(new Error(`relay exited with ${code}:\n${errors}`)))
      })
    }),
    ({ child }) =>
      Effect.callback<void>((resume) => {
        if (child.exitCode !== null) return resume(Effect.void)
        child.once("exit", () => resume(Effect.void))
        child.kill("SIGTERM")
      }),
  )
