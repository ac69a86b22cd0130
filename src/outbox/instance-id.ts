import { randomBytes } from "node:crypto"
import { hostname } from "node:os"
import { Context, Layer } from "effect"
import { RelayConfig } from "../config/config.ts"

/** This process's name in leases: unique per process, so a restarted relay never mistakes old leases for its own. */
export class InstanceId extends Context.Service<InstanceId, string>()("outbox-relay/InstanceId") {
  static readonly layer = Layer.effect(
    InstanceId,
    // The pid and random suffix keep a restarted process (same host name or RELAY_INSTANCE_ID) distinct.
    RelayConfig.useSync((c) => `${c.instanceId ?? hostname()}-${process.pid}-${randomBytes(3).toString("hex")}`),
  )
}
