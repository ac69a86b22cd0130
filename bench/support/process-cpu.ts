/**
 * CPU time of the processes a drain runs on, read from /proc: the relay, the PostgreSQL
 * backends serving its connections plus the cluster's own background writers, and the
 * broker's JVM. All three share the machine's cores, so the sum is what an event costs it.
 */
import { execFileSync } from "node:child_process"
import { readdirSync, readFileSync } from "node:fs"

const CLOCK_TICKS_PER_S = 100

/** utime + stime of a process in seconds, or undefined once it is gone. */
export const cpuSeconds = (pid: number): number | undefined => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_S
  } catch {
    return undefined
  }
}

const parentOf = (pid: number): number | undefined => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1])
  } catch {
    return undefined
  }
}

const cmdline = (pid: number): string => {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ")
  } catch {
    return ""
  }
}

/** The pid listening on a local TCP port (`ss -ltnp`), if this user may see it. */
export const listenerPid = (port: number): number | undefined => {
  try {
    const out = execFileSync("ss", ["-ltnpH", `sport = :${port}`], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] })
    const m = /pid=(\d+)/.exec(out)
    return m === null ? undefined : Number(m[1])
  } catch {
    return undefined
  }
}

/**
 * The postmaster's background processes (checkpointer, background writer, walwriter,
 * autovacuum): work a drain causes outside the backends, the WAL above all.
 */
export const postgresAuxiliaryPids = (postmaster: number): ReadonlyArray<number> =>
  readdirSync("/proc")
    .filter((d) => /^\d+$/.test(d))
    .map(Number)
    .filter((pid) => parentOf(pid) === postmaster && /checkpointer|background writer|walwriter|autovacuum/.test(cmdline(pid)))

/** The last CPU reading of each process seen, so a process that exits keeps what it used. */
export class CpuLedger {
  private readonly first = new Map<number, number>()
  private readonly last = new Map<number, number>()

  /** `fromZero`: a process started for this run (its whole CPU counts), else only what it uses from now on. */
  observe(pid: number, fromZero: boolean): void {
    const s = cpuSeconds(pid)
    if (s === undefined) return
    if (!this.first.has(pid)) this.first.set(pid, fromZero ? 0 : s)
    this.last.set(pid, s)
  }

  get seconds(): number {
    let total = 0
    for (const [pid, last] of this.last) total += last - (this.first.get(pid) ?? 0)
    return total
  }
}
