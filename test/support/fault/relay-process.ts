/**
 * `outbox-relay run` as a child process, so SIGKILL and SIGTERM are real. Its JSON log
 * lines are kept (parsed) for assertions, and its whole output for failure reports.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { BIN, onEmergencyExit } from "./processes.ts"

export interface LogLine {
  readonly level: string
  readonly message: string
  readonly [field: string]: unknown
}

export interface Exit {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
}

/** Settings that keep a fault scenario short: small leases, quick backoffs, quick timeouts. */
export const FAST_RELAY_ENV: Readonly<Record<string, string>> = {
  LOG_FORMAT: "json",
  LOG_LEVEL: "info",
  LEASE_MS: "3000",
  PUBLISH_TIMEOUT_MS: "1000",
  BACKOFF_BASE_MS: "100",
  BACKOFF_MAX_MS: "1000",
  POLL_INTERVAL_MS: "200",
  BATCH_SIZE: "100",
  SHUTDOWN_GRACE_MS: "5000",
  HTTP_PORT: "0",
}

export class RelayProcess {
  readonly name: string
  readonly child: ChildProcess
  readonly output: Array<string> = []
  readonly logs: Array<LogLine> = []
  readonly exited: Promise<Exit>
  private readonly unregister: () => void
  private exit: Exit | undefined

  constructor(name: string, env: Readonly<Record<string, string>>) {
    this.name = name
    this.child = spawn(BIN, ["run"], {
      // Only what the test gives: nothing from the developer's shell leaks in.
      env: { PATH: process.env.PATH ?? "", ...FAST_RELAY_ENV, RELAY_INSTANCE_ID: name, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    })
    const child = this.child
    this.unregister = onEmergencyExit(() => child.kill("SIGKILL"))
    const collect = (stream: NodeJS.ReadableStream | null, label: string) => {
      let partial = ""
      stream?.setEncoding("utf8")
      stream?.on("data", (chunk: string) => {
        const lines = (partial + chunk).split("\n")
        partial = lines.pop() ?? ""
        for (const line of lines) this.addLine(line, label)
      })
      stream?.on("end", () => {
        if (partial !== "") this.addLine(partial, label)
      })
    }
    collect(child.stdout, "out")
    collect(child.stderr, "err")
    this.exited = new Promise((resolve) => {
      child.on("exit", (code, signal) => {
        this.exit = { code, signal }
        this.unregister()
        resolve(this.exit)
      })
    })
  }

  private addLine(line: string, label: string) {
    this.output.push(`[${this.name} ${label}] ${line}`)
    if (!line.startsWith("{")) return
    try {
      const parsed: unknown = JSON.parse(line)
      if (typeof parsed === "object" && parsed !== null && "message" in parsed && "level" in parsed) this.logs.push(parsed as LogLine)
    } catch {
      // not a log line
    }
  }

  get pid(): number {
    return this.child.pid ?? -1
  }

  get running(): boolean {
    return this.exit === undefined
  }

  /** Lines whose message starts with `prefix`. */
  linesWith(prefix: string): ReadonlyArray<LogLine> {
    return this.logs.filter((l) => l.message.startsWith(prefix))
  }

  async waitForLog(prefix: string, timeoutMs = 30_000): Promise<LogLine> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const found = this.logs.find((l) => l.message.startsWith(prefix))
      if (found !== undefined) return found
      if (this.exit !== undefined) throw new Error(`${this.name} exited (${JSON.stringify(this.exit)}) before logging "${prefix}"`)
      if (Date.now() > deadline) throw new Error(`${this.name} did not log "${prefix}" within ${timeoutMs} ms`)
      await new Promise((r) => setTimeout(r, 20))
    }
  }

  /** Started: the loop runs (schema accepted, connections made). */
  ready(timeoutMs = 30_000): Promise<LogLine> {
    return this.waitForLog("relay started", timeoutMs)
  }

  kill(signal: NodeJS.Signals): void {
    if (this.running) this.child.kill(signal)
  }

  /** SIGTERM, then SIGKILL if it has not exited within `graceMs`. */
  async stop(graceMs = 10_000): Promise<Exit> {
    if (!this.running) return this.exit!
    this.child.kill("SIGTERM")
    const timer = setTimeout(() => this.child.kill("SIGKILL"), graceMs)
    const exit = await this.exited
    clearTimeout(timer)
    return exit
  }

  /** Warnings and errors the relay logged (what an operator would look at first). */
  problems(): ReadonlyArray<LogLine> {
    return this.logs.filter((l) => l.level === "warn" || l.level === "warning" || l.level === "error" || l.level === "fatal")
  }
}
