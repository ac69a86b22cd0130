/**
 * scripts/kafka.sh starts its daemon through a helper shell that closes inherited file
 * descriptors first; what the daemon prints on stderr must still reach its log file, or a
 * JVM that cannot start leaves nothing to read.
 */
import { spawnSync } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import path from "node:path"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"

const KAFKA_SH = fileURLToPath(new URL("../../scripts/kafka.sh", import.meta.url))

const freePort = () =>
  new Promise<number>((resolve) => {
    const server = createServer()
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })

describe("scripts/kafka.sh", () => {
  it("keeps the JVM's stderr and stdout in kafka.log when the broker cannot start, and shows them", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "kafka-sh-stderr-"))
    try {
      const [port, controllerPort] = [await freePort(), await freePort()]
      // The JVM logs its first lines to stderr (-Xlog), then finds the heap too small to boot and
      // exits at once (that message goes to stdout).
      const start = spawnSync(
        "bash",
        [KAFKA_SH, "start", "--dir", dir, "--port", String(port), "--controller-port", String(controllerPort)],
        {
          env: { ...process.env, KAFKA_JVM_OPTS: "-Xlog:os=info:stderr -Xmx1k" },
          encoding: "utf8",
          timeout: 90_000,
        },
      )
      expect(start.status).not.toBe(0)
      const log = readFileSync(path.join(dir, "kafka.log"), "utf8")
      expect(log).toContain("[info][os]") // stderr
      expect(log).toContain("Too small maximum heap") // stdout
      expect(start.stderr).toContain("Too small maximum heap")
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
