/**
 * A TCP proxy between the relay and a broker that can stall the network: while stalled
 * it forwards nothing and reads nothing (senders fill their TCP windows and wait), keeps
 * every socket open, and holds new connections without dialling the broker. Healing
 * resumes the flow, so bytes are late, never lost — as when a link stalls and recovers.
 */
import { connect, createServer, type Server, type Socket } from "node:net"

export class StallingProxy {
  readonly port: number
  private readonly server: Server
  private target = 0
  private readonly sockets = new Set<Socket>()
  private readonly held: Array<Socket> = []
  private stalledSince: number | undefined
  connections = 0
  /** Each chunk from the broker reaches the client this much later (a slow but live broker); 0: at once. */
  responseDelayMs = 0

  private constructor(server: Server, port: number) {
    this.server = server
    this.port = port
  }

  /** Listens on a free port now; the target port can be given later (the broker starts after, advertising this port). */
  static async listen(): Promise<StallingProxy> {
    let proxy: StallingProxy | undefined
    const server = createServer((client) => proxy?.accept(client))
    const port = await new Promise<number>((resolve, reject) => {
      server.on("error", reject)
      server.listen(0, "127.0.0.1", () => {
        const address = server.address()
        resolve(typeof address === "object" && address !== null ? address.port : 0)
      })
    })
    proxy = new StallingProxy(server, port)
    return proxy
  }

  forwardTo(port: number): void {
    this.target = port
  }

  get stalled(): boolean {
    return this.stalledSince !== undefined
  }

  stall(): void {
    this.stalledSince = Date.now()
    for (const s of this.sockets) s.pause()
  }

  heal(): void {
    this.stalledSince = undefined
    for (const s of this.sockets) s.resume()
    for (const client of this.held.splice(0)) this.bridge(client)
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy()
    for (const s of this.held) s.destroy()
    await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }

  private accept(client: Socket) {
    this.connections++
    client.on("error", () => client.destroy())
    if (this.stalled) {
      client.pause()
      this.held.push(client)
    } else {
      this.bridge(client)
    }
  }

  private bridge(client: Socket) {
    const upstream = connect(this.target, "127.0.0.1")
    this.sockets.add(client)
    this.sockets.add(upstream)
    const forward = (from: Socket, to: Socket) => {
      // Timers of one delay fire in the order they were set, so the stream stays in order.
      const delayed = from === upstream
      from.on("data", (chunk) => {
        if (delayed && this.responseDelayMs > 0) setTimeout(() => to.writable && to.write(chunk), this.responseDelayMs)
        else to.write(chunk)
      })
      from.on("end", () => to.end())
      from.on("close", () => {
        this.sockets.delete(from)
        to.destroy()
      })
      from.on("error", () => from.destroy())
    }
    forward(client, upstream)
    forward(upstream, client)
    if (this.stalled) {
      client.pause()
      upstream.pause()
    }
  }
}
