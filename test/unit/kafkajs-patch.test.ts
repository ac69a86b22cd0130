import { readFileSync } from "node:fs"
import { createRequire } from "node:module"
import { describe, expect, it } from "vitest"

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
    for (const file of ["src/protocol/encoder.js", "src/producer/groupMessagesPerPartition.js"]) {
      expect(readFileSync(kafkajsFile(file), "utf8").startsWith("/* outbox-relay patch */"), file).toBe(true)
    }
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
