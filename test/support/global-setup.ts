/**
 * Gives the tests a real PostgreSQL and Kafka: the ones named by TEST_DATABASE_URL /
 * TEST_KAFKA_BROKERS, else the local infrastructure (scripts/infra.sh), started here
 * when it is not already up and stopped again afterwards.
 */
import { execFileSync } from "node:child_process"
import { fileURLToPath } from "node:url"
import type { TestProject } from "vitest/node"

const INFRA = fileURLToPath(new URL("../../scripts/infra.sh", import.meta.url))

const parseEnv = (out: string): Record<string, string> => {
  const env: Record<string, string> = {}
  for (const line of out.split("\n")) {
    const m = /^(?:export\s+)?([A-Z_]+)=["']?([^"'\s]*)["']?\s*$/.exec(line.trim())
    if (m) env[m[1]!] = m[2]!
  }
  return env
}

const infra = (command: "up" | "down" | "env") =>
  execFileSync("bash", [INFRA, command], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"], env: process.env })

export default function setup(project: TestProject) {
  let started = false
  let env: Record<string, string>
  if (process.env.TEST_DATABASE_URL && process.env.TEST_KAFKA_BROKERS) {
    env = { DATABASE_URL: process.env.TEST_DATABASE_URL, KAFKA_BROKERS: process.env.TEST_KAFKA_BROKERS }
  } else {
    try {
      env = parseEnv(infra("env"))
    } catch {
      env = parseEnv(infra("up"))
      started = true
    }
  }
  if (!env.DATABASE_URL || !env.KAFKA_BROKERS) throw new Error("scripts/infra.sh did not report DATABASE_URL and KAFKA_BROKERS")
  project.provide("databaseUrl", env.DATABASE_URL)
  project.provide("kafkaBrokers", env.KAFKA_BROKERS)
  return () => {
    if (started && !process.env.KEEP_INFRA) infra("down")
  }
}

declare module "vitest" {
  export interface ProvidedContext {
    databaseUrl: string
    kafkaBrokers: string
  }
}
