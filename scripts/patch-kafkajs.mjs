#!/usr/bin/env node
/**
 * Patches kafkajs 2.2.4 (unmaintained since 2023) where the relay's profile found it
 * wasting CPU on every record; run by `postinstall` (and by the Dockerfile, which installs
 * with --ignore-scripts). The bytes on the wire are unchanged:
 * - Encoder: `Buffer.alloc` zero-fills 512 bytes for each record and each of its headers
 *   (≈3 KB per event, ~15 % of the relay's CPU with GC). Every byte up to `offset` is
 *   written before `buffer` exposes it, so pooled `allocUnsafe` is safe.
 * - writeUVarInt: wrote each varint through a temporary array and `Buffer.from`.
 * - groupMessagesPerPartition: copied the partition's array for every message (O(n²)).
 * Idempotent. Fails loudly when kafkajs is another version or the code moved, so a dependency
 * bump cannot silently drop the patch (the unit test `kafkajs-patch.test.ts` checks it too).
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"

const VERSION = "2.2.4"
const MARKER = "/* outbox-relay patch */"

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "node_modules", "kafkajs")

const patches = [
  {
    file: "src/protocol/encoder.js",
    edits: [
      [
        "this.buf = Buffer.alloc(Encoder.nextPowerOfTwo(initialSize))",
        "this.buf = Buffer.allocUnsafe(Encoder.nextPowerOfTwo(initialSize))",
      ],
      ["const newBuffer = Buffer.alloc(newLength)", "const newBuffer = Buffer.allocUnsafe(newLength)"],
      [
        `  writeUVarInt(value) {
    const byteArray = []
    while ((value & UNSIGNED_INT32_MAX_NUMBER) !== 0) {
      byteArray.push((value & OTHER_BITS) | MOST_SIGNIFICANT_BIT)
      value >>>= 7
    }
    byteArray.push(value & OTHER_BITS)
    this.writeBufferInternal(Buffer.from(byteArray))
    return this
  }`,
        `  writeUVarInt(value) {
    this.ensureAvailable(5)
    while ((value & UNSIGNED_INT32_MAX_NUMBER) !== 0) {
      this.buf[this.offset++] = (value & OTHER_BITS) | MOST_SIGNIFICANT_BIT
      value >>>= 7
    }
    this.buf[this.offset++] = value & OTHER_BITS
    return this
  }`,
      ],
    ],
  },
  {
    file: "src/producer/groupMessagesPerPartition.js",
    edits: [
      [
        `  return messages.reduce((result, message) => {
    const partition = partitioner({ topic, partitionMetadata, message })
    const current = result[partition] || []
    return Object.assign(result, { [partition]: [...current, message] })
  }, {})`,
        `  const result = {}
  for (const message of messages) {
    const partition = partitioner({ topic, partitionMetadata, message })
    ;(result[partition] || (result[partition] = [])).push(message)
  }
  return result`,
      ],
    ],
  },
]

const fail = (message) => {
  process.stderr.write(`patch-kafkajs: ${message}\n`)
  process.exit(1)
}

if (!existsSync(root)) {
  // Installed without kafkajs (e.g. a partial install): nothing to patch.
  process.exit(0)
}
const version = JSON.parse(readFileSync(join(root, "package.json"), "utf8")).version
if (version !== VERSION) fail(`expected kafkajs ${VERSION}, found ${version}: review the patches in scripts/patch-kafkajs.mjs`)

let applied = 0
for (const { file, edits } of patches) {
  const path = join(root, file)
  let text = readFileSync(path, "utf8")
  if (text.startsWith(MARKER)) continue
  for (const [from, to] of edits) {
    if (!text.includes(from)) fail(`${file}: the code to patch was not found`)
    text = text.replace(from, to)
  }
  writeFileSync(path, `${MARKER}\n${text}`)
  applied++
}
if (applied > 0) process.stdout.write(`patch-kafkajs: patched ${applied} kafkajs file(s)\n`)
