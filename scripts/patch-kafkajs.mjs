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
 * - The record decoder (consumer side) rebuilt the headers object for every header (reduce
 *   with object spread, O(n²)): 10,000 headers on one message took ~2 minutes, with no
 *   heartbeat meanwhile, so one message stalled the whole group. Now one object, filled in
 *   place, with the same shape (a repeated header becomes an array, in order; a header
 *   named `__proto__` stays an own property, as the spread made it).
 * Idempotent. Fails loudly when kafkajs is another version or the code moved, so a dependency
 * bump cannot silently drop the patch (the unit test `kafkajs-patch.test.ts` checks it too).
 *
 * Which kafkajs: the one this package's code resolves (require.resolve from here), wherever
 * npm put it. When outbox-relay is itself installed as a dependency, kafkajs is a peer: the
 * resolved copy is the service's own, shared with the service's code. That copy is left alone
 * unless OUTBOX_RELAY_PATCH_KAFKAJS=1 asks for it (the relay works unpatched, the encoder
 * patches only save CPU; the consumer needs the decoder patch against messages with thousands
 * of headers, and logs a WARN at start without it), and the script says so in one line.
 * Every outcome prints one line naming the kafkajs it looked at: nothing reads as "patched"
 * unless the files were written. (The consumer logs a WARN at start when the decoder is not
 * patched, so the opt-in is not missed.)
 *
 * Why a script and not patch files applied by patch-package (issue 19): patch-package applies
 * the `patches/` of the project it is run from, to that project's node_modules, from that
 * project's own postinstall. Here the patch must also reach the kafkajs of a service that
 * installed outbox-relay as a dependency (the service's copy, shared with its code, wherever
 * npm hoisted it): our postinstall runs inside node_modules/outbox-relay, where patch-package
 * would look for node_modules/outbox-relay/node_modules/kafkajs and the service's own
 * patches. A script that resolves kafkajs the way our code does, matches exact text and
 * fails when the text moved keeps both cases working with no extra dependency; the unit test
 * kafkajs-patch.test.ts fails when the installed files differ from the patched text.
 */
import { readFileSync, realpathSync, writeFileSync } from "node:fs"
import { createRequire } from "node:module"
import { dirname, join, sep } from "node:path"
import { fileURLToPath } from "node:url"

const VERSION = "2.2.4"
const MARKER = "/* outbox-relay patch */"
const OPT_IN = "OUTBOX_RELAY_PATCH_KAFKAJS"

const say = (message) => process.stdout.write(`patch-kafkajs: ${message}\n`)
const fail = (message) => {
  process.stderr.write(`patch-kafkajs: ${message}\n`)
  process.exit(1)
}

export const patches = [
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
    file: "src/protocol/recordBatch/record/v0/decoder.js",
    edits: [
      [
        `  const headers = decoder.readVarIntArray(HeaderDecoder).reduce(
    (obj, { key, value }) => ({
      ...obj,
      [key]:
        obj[key] === undefined
          ? value
          : Array.isArray(obj[key])
          ? obj[key].concat([value])
          : [obj[key], value],
    }),
    {}
  )`,
        `  const headers = {}
  for (const { key, value } of decoder.readVarIntArray(HeaderDecoder)) {
    const seen = Object.prototype.hasOwnProperty.call(headers, key) ? headers[key] : undefined
    const next = seen === undefined ? value : Array.isArray(seen) ? (seen.push(value), seen) : [seen, value]
    if (key === '__proto__') Object.defineProperty(headers, key, { value: next, writable: true, enumerable: true, configurable: true })
    else headers[key] = next
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

const main = () => {
  const packageRoot = realpathSync(join(dirname(fileURLToPath(import.meta.url)), ".."))
  // This checkout (or the image's /app) is the project; under a node_modules folder it is a dependency.
  const asDependency = packageRoot.split(sep).includes("node_modules")

  let root
  try {
    root = dirname(createRequire(join(packageRoot, "package.json")).resolve("kafkajs/package.json"))
  } catch {
    // A partial install (e.g. --omit=peer): nothing to patch, and nothing claimed.
    say(`kafkajs is not installed${asDependency ? " (a peer dependency of outbox-relay: npm install kafkajs@2)" : ""}; nothing patched`)
    process.exit(0)
  }
  const version = JSON.parse(readFileSync(join(root, "package.json"), "utf8")).version

  if (asDependency && process.env[OPT_IN] !== "1") {
    say(
      `outbox-relay is installed as a dependency: kafkajs ${version} at ${root} is your project's own copy, left unpatched ` +
        `(the relay works as is; a consumer should have it: unpatched, a message with thousands of headers takes minutes to decode). ` +
        `To patch it: ${OPT_IN}=1 node ${join(packageRoot, "scripts", "patch-kafkajs.mjs")}`,
    )
    process.exit(0)
  }
  if (version !== VERSION) fail(`expected kafkajs ${VERSION} at ${root}, found ${version}: review the patches in scripts/patch-kafkajs.mjs`)

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
  say(applied > 0 ? `patched ${applied} file(s) of kafkajs ${version} at ${root}` : `kafkajs ${version} at ${root} is already patched`)
}

// Run as a script (postinstall, by hand); imported (the unit test reads `patches`), it does nothing.
if (process.argv[1] !== undefined && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) main()
