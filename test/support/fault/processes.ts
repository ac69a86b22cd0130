/**
 * Real processes for fault tests: free ports, a Kafka broker and a PostgreSQL cluster the
 * test owns (scripts/kafka.sh, scripts/pg.sh), and `outbox-relay` commands. Everything
 * started here is registered for teardown, and killed on the way out even if a test crashes.
 */
import { execFile, execFileSync } from "node:child_process"
import { randomBytes } from "node:crypto"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"

export const ROOT = fileURLToPath(new URL("../../../", import.meta.url))
export const BIN = join(ROOT, "bin/outbox-relay")
const KAFKA_SH = join(ROOT, "scripts/kafka.sh")
const PG_SH = join(ROOT, "scripts/pg.sh")

/** A port nothing listens on right now (the kernel's pick for port 0). */
export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = createServer()
    server.on("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

export interface CommandResult {
  readonly code: number
  readonly output: string
}

/** Runs a command without blocking the event loop (writers and readers keep going meanwhile). */
export const runCommand = (
  file: string,
  args: ReadonlyArray<string>,
  options: { readonly env?: Readonly<Record<string, string>>; readonly timeoutMs?: number } = {},
): Promise<CommandResult> =>
  new Promise((resolve) => {
    execFile(
      file,
      [...args],
      { env: options.env ?? process.env, timeout: options.timeoutMs ?? 120_000, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === "number" ? error.code : -1
        resolve({ code, output: `${stdout}${stderr}` })
      },
    )
  })

const mustRun = async (file: string, args: ReadonlyArray<string>): Promise<string> => {
  const result = await runCommand(file, args)
  if (result.code !== 0) throw new Error(`${file} ${args.join(" ")} exited ${result.code}:\n${result.output}`)
  return result.output
}

/** Synchronous last-resort kills, run when the test process exits with processes still up. */
const emergency = new Map<string, () => void>()
process.on("exit", () => {
  for (const kill of emergency.values()) {
    try {
      kill()
    } catch {
      // best effort: the process is exiting anyway
    }
  }
})
export const onEmergencyExit = (kill: () => void): (() => void) => {
  const id = randomBytes(6).toString("hex")
  emergency.set(id, kill)
  return () => emergency.delete(id)
}

const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return !readFileSync(`/proc/${pid}/stat`, "utf8").split(" ")[2]?.startsWith("Z")
  } catch {
    return false
  }
}

export const tempDir = (label: string): string => mkdtempSync(join(tmpdir(), `outbox-fault-${label}-`))

const tail = (path: string, lines: number): string => {
  try {
    return readFileSync(path, "utf8").split("\n").slice(-lines).join("\n")
  } catch {
    return `(no ${path})`
  }
}

export interface OwnedBroker {
  readonly dir: string
  readonly port: number
  /** Where clients connect: the broker's port, or the port it advertises (a proxy in front of it). */
  readonly bootstrap: string
  readonly start: () => Promise<void>
  readonly kill: () => Promise<void>
  readonly stop: () => Promise<void>
  readonly logTail: (lines?: number) => string
}

/** A single-node broker in a fresh directory, on free ports; `advertisedPort` makes clients dial a proxy. */
export const startOwnedBroker = async (options: { readonly advertisedPort?: number } = {}): Promise<OwnedBroker> => {
  const dir = tempDir("kafka")
  const port = await freePort()
  const controllerPort = await freePort()
  const args = ["--dir", dir, "--port", String(port), "--controller-port", String(controllerPort)]
  if (options.advertisedPort !== undefined) args.push("--advertised-port", String(options.advertisedPort))
  const unregister = onEmergencyExit(() => {
    execFileSync("bash", [KAFKA_SH, "kill", "--dir", dir], { stdio: "ignore" })
    rmSync(dir, { recursive: true, force: true })
  })
  const broker: OwnedBroker = {
    dir,
    port,
    bootstrap: `127.0.0.1:${options.advertisedPort ?? port}`,
    start: async () => {
      await mustRun("bash", [KAFKA_SH, "start", ...args])
    },
    kill: async () => {
      await mustRun("bash", [KAFKA_SH, "kill", "--dir", dir])
    },
    stop: async () => {
      await runCommand("bash", [KAFKA_SH, "stop", "--dir", dir])
      unregister()
      rmSync(dir, { recursive: true, force: true })
    },
    logTail: (lines = 40) => `${tail(join(dir, "kafka.log.prev"), lines)}\n--- current run ---\n${tail(join(dir, "kafka.log"), lines)}`,
  }
  try {
    await broker.start()
  } catch (e) {
    await broker.stop()
    throw e
  }
  return broker
}

export interface OwnedCluster {
  readonly dir: string
  readonly port: number
  readonly url: string
  readonly start: () => Promise<void>
  readonly kill: () => Promise<void>
  readonly stop: () => Promise<void>
  /** Fast shutdown requested at once (SIGINT to the postmaster, no script in between); resolves when it is down. */
  readonly fastShutdownNow: () => Promise<void>
  readonly destroy: () => Promise<void>
  readonly logTail: (lines?: number) => string
}

/** A throwaway PostgreSQL cluster on a free port (never the shared 5432); its `postgres` database is the outbox. */
export const startOwnedCluster = async (): Promise<OwnedCluster> => {
  // Directly under /tmp: as root, pg.sh hands DIR to the postgres user, who must reach it.
  const dir = join("/tmp", `outbox-fault-pg-${randomBytes(4).toString("hex")}`)
  const port = await freePort()
  const unregister = onEmergencyExit(() => {
    execFileSync("bash", [PG_SH, "kill", "--dir", dir], { stdio: "ignore" })
    rmSync(dir, { recursive: true, force: true })
  })
  const cluster: OwnedCluster = {
    dir,
    port,
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    start: async () => {
      await mustRun("bash", [PG_SH, "start", "--dir", dir, "--port", String(port)])
    },
    kill: async () => {
      await mustRun("bash", [PG_SH, "kill", "--dir", dir])
    },
    stop: async () => {
      await mustRun("bash", [PG_SH, "stop", "--dir", dir])
    },
    fastShutdownNow: async () => {
      const pid = Number(readFileSync(join(dir, "data/postmaster.pid"), "utf8").split("\n")[0])
      process.kill(pid, "SIGINT")
      for (const deadline = Date.now() + 30_000; isAlive(pid); ) {
        if (Date.now() > deadline) throw new Error(`postmaster ${pid} still running 30 s after SIGINT`)
        await sleep(20)
      }
    },
    destroy: async () => {
      await runCommand("bash", [PG_SH, "stop", "--dir", dir])
      unregister()
      rmSync(dir, { recursive: true, force: true })
    },
    logTail: (lines = 40) => tail(join(dir, "postgres.log"), lines),
  }
  try {
    await cluster.start()
  } catch (e) {
    await cluster.destroy()
    throw e
  }
  return cluster
}

/** `outbox-relay <args>` as users run it, with only the given environment. */
export const outboxRelay = (args: ReadonlyArray<string>, env: Readonly<Record<string, string>>, timeoutMs = 60_000) =>
  runCommand(BIN, args, { env: { PATH: process.env.PATH ?? "", ...env }, timeoutMs })
