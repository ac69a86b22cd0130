import { readFileSync } from "node:fs"
import { createRequire } from "node:module"
import { describe, expect, it } from "vitest"
import { patches } from "../../scripts/patch-kafkajs.mjs"

// kafkajs internals, as patched by scripts/patch-kafkajs.mjs (postinstall).
const require = createRequire(import.meta.url)
const kafkajsFile = (path: string) => require.resolve(`kafkajs/${path}`)

interface EncoderInstance {
  writeVarInt(value: number): EncoderInstance
  writeUVarInt(value: number): EncoderInstance
  readonly buffer: Buffer
}
interface DecoderInstance {
  readVarInt(): number
  readUVarInt(): number
}
const Encoder = require(kafkajsFile("src/protocol/encoder.js")) as new (size?: number) => EncoderInstance
const Decoder = require(kafkajsFile("src/protocol/decoder.js")) as new (buffer: Buffer) => DecoderInstance
type Partitioned = Record<string, ReadonlyArray<{ key: string }>>
const groupMessagesPerPartition = require(kafkajsFile("src/producer/groupMessagesPerPartition.js")) as (args: {
  topic: string
  partitionMetadata: ReadonlyArray<unknown>
  messages: ReadonlyArray<{ key: string }>
  partitioner: (args: { message: { key: string } }) => number
}) => Partitioned

interface RecordFields {
  readonly key: Buffer | null
  readonly value: Buffer | null
  readonly headers: Record<string, Buffer | ReadonlyArray<Buffer>>
}
const encodeRecord = require(kafkajsFile("src/protocol/recordBatch/record/v0/index.js")) as (record: RecordFields) => EncoderInstance
const decodeRecord = require(kafkajsFile("src/protocol/recordBatch/record/v0/decoder.js")) as (
  decoder: DecoderInstance,
  context: { firstOffset: string; firstTimestamp: string },
) => RecordFields & { readonly offset: string }
const DecoderWithBytes = Decoder as unknown as new (buffer: Buffer) => DecoderInstance & { readVarIntBytes(): Buffer }

/** A record as the broker sends it (length-prefixed). */
const encoded = (record: RecordFields) => encodeRecord(record).buffer
/** Decoded the way a fetch decodes it: the length prefix, then the record decoder. */
const decoded = (bytes: Buffer) =>
  decodeRecord(new DecoderWithBytes(new DecoderWithBytes(bytes).readVarIntBytes()), { firstOffset: "0", firstTimestamp: "0" })
const roundTrip = (record: RecordFields) => decoded(encoded(record))

/** LEB128 as the Kafka protocol defines it, written out by hand as the reference. */
const uvarint = (value: number): Array<number> => {
  const out: Array<number> = []
  let v = value >>> 0
  while (v >= 0x80) {
    out.push((v & 0x7f) | 0x80)
    v >>>= 7
  }
  out.push(v)
  return out
}

describe("the kafkajs patch (scripts/patch-kafkajs.mjs)", () => {
  it("is applied to the installed kafkajs", () => {
    for (const file of [
      "src/protocol/encoder.js",
      "src/producer/groupMessagesPerPartition.js",
      "src/protocol/recordBatch/record/v0/decoder.js",
    ]) {
      expect(readFileSync(kafkajsFile(file), "utf8").startsWith("/* outbox-relay patch */"), file).toBe(true)
    }
  })

  it("matches the installed files: each replacement is there and the code it replaced is gone (fails when kafkajs' files change under the patch)", () => {
    expect(patches.length).toBe(3)
    for (const { file, edits } of patches) {
      const text = readFileSync(kafkajsFile(file), "utf8")
      for (const [from, to] of edits) {
        expect(text.includes(to), `${file}: patched text present`).toBe(true)
        expect(text.includes(from), `${file}: original text gone`).toBe(false)
      }
    }
  })

  it("decodes 10,000 record headers in well under a second (unpatched: about two minutes)", () => {
    const headers = Object.fromEntries(Array.from({ length: 10_000 }, (_, i) => [`h-${i}`, Buffer.from(`v-${i}`)]))
    const bytes = encoded({ key: Buffer.from("k"), value: Buffer.from("v"), headers })
    // CPU time, not wall time: on a shared machine the wall clock also counts other processes' turns.
    const started = process.cpuUsage()
    const record = decoded(bytes)
    const used = process.cpuUsage(started)
    const cpuMs = (used.user + used.system) / 1000
    expect(Object.keys(record.headers)).toHaveLength(10_000)
    expect(record.headers["h-9999"]?.toString()).toBe("v-9999")
    expect(cpuMs).toBeLessThan(250)
  })

  it("decodes headers as kafkajs did: a repeated header becomes an array in order, __proto__ stays an own header", () => {
    const record = roundTrip({
      key: null,
      value: Buffer.from("x"),
      headers: { once: Buffer.from("1"), twice: [Buffer.from("a"), Buffer.from("b")], thrice: ["p", "q", "r"].map((v) => Buffer.from(v)) },
    })
    expect(record.headers.once?.toString()).toBe("1")
    expect((record.headers.twice as ReadonlyArray<Buffer>).map(String)).toEqual(["a", "b"])
    expect((record.headers.thrice as ReadonlyArray<Buffer>).map(String)).toEqual(["p", "q", "r"])
    const proto = roundTrip({ key: null, value: null, headers: JSON.parse('{"__proto__": "x"}') })
    expect(Object.getPrototypeOf(proto.headers)).toBe(Object.prototype)
    expect(Object.keys(proto.headers)).toEqual(["__proto__"])
  })

  it("writes varints byte for byte as the protocol defines them, and kafkajs reads them back", () => {
    const values = [0, 1, 63, 64, 127, 128, 300, 16_383, 16_384, 2 ** 21, 2 ** 28 - 1, 2 ** 28, 2 ** 31 - 1]
    const encoder = new Encoder(1) // tiny on purpose: every write must grow the buffer correctly
    for (const v of values) encoder.writeUVarInt(v)
    for (const v of values) encoder.writeVarInt(-v)
    const zigzag = (n: number) => ((n << 1) ^ (n >> 31)) >>> 0
    expect([...encoder.buffer]).toEqual([...values.flatMap(uvarint), ...values.flatMap((v) => uvarint(zigzag(-v)))])
    const decoder = new Decoder(encoder.buffer)
    expect(values.map(() => decoder.readUVarInt())).toEqual(values)
    expect(values.map(() => decoder.readVarInt())).toEqual(values.map((v) => (v === 0 ? 0 : -v)))
  })

  it("groups messages per partition keeping their order", () => {
    const messages = Array.from({ length: 50 }, (_, i) => ({ key: `k${i}` }))
    const grouped = groupMessagesPerPartition({
      topic: "t",
      partitionMetadata: [{}],
      messages,
      partitioner: ({ message }) => Number(message.key.slice(1)) % 3,
    })
    expect(Object.keys(grouped).sort()).toEqual(["0", "1", "2"])
    for (const p of [0, 1, 2]) expect(grouped[p]?.map((m) => m.key)).toEqual(messages.filter((_, i) => i % 3 === p).map((m) => m.key))
  })
})
