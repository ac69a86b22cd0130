/**
 * Reads the spans out of an OTLP/HTTP protobuf body (ExportTraceServiceRequest), enough of
 * the wire format for the tracing test's receiver: ids, name, kind, string/int/bool attributes.
 * No real OTLP backend comes from Maven Central the way Zipkin does, so the protobuf
 * exporter is checked against this decoder in the test process.
 */

interface Field {
  readonly number: number
  readonly varint?: bigint
  readonly bytes?: Buffer
}

const fields = (buffer: Buffer): ReadonlyArray<Field> => {
  const out: Array<Field> = []
  let at = 0
  const varint = (): bigint => {
    let result = 0n
    let shift = 0n
    for (;;) {
      const byte = buffer[at++]!
      result |= BigInt(byte & 0x7f) << shift
      if ((byte & 0x80) === 0) return result
      shift += 7n
    }
  }
  while (at < buffer.length) {
    const key = Number(varint())
    const number = key >>> 3
    switch (key & 7) {
      case 0:
        out.push({ number, varint: varint() })
        break
      case 1:
        out.push({ number, bytes: buffer.subarray(at, at + 8) })
        at += 8
        break
      case 2: {
        const length = Number(varint())
        out.push({ number, bytes: buffer.subarray(at, at + length) })
        at += length
        break
      }
      case 5:
        out.push({ number, bytes: buffer.subarray(at, at + 4) })
        at += 4
        break
      default:
        throw new Error(`unsupported protobuf wire type ${key & 7}`)
    }
  }
  return out
}

const all = (buffer: Buffer, number: number) => fields(buffer).filter((f) => f.number === number && f.bytes !== undefined)
const first = (buffer: Buffer, number: number) => fields(buffer).find((f) => f.number === number)

export interface DecodedSpan {
  readonly traceId: string
  readonly spanId: string
  readonly parentSpanId: string
  readonly name: string
  readonly kind: number
  readonly attributes: Readonly<Record<string, string | number | boolean>>
}

const anyValue = (buffer: Buffer): string | number | boolean | undefined => {
  const value = fields(buffer)[0]
  if (value === undefined) return undefined
  if (value.number === 1) return value.bytes!.toString("utf8")
  if (value.number === 2) return value.varint === 1n
  if (value.number === 3) return Number(BigInt.asIntN(64, value.varint!))
  return undefined
}

const attributes = (buffer: Buffer, number: number) =>
  Object.fromEntries(
    all(buffer, number).map((kv) => [
      first(kv.bytes!, 1)?.bytes?.toString("utf8") ?? "",
      anyValue(first(kv.bytes!, 2)?.bytes ?? Buffer.alloc(0)),
    ]),
  ) as Record<string, string | number | boolean>

/** Every span of one ExportTraceServiceRequest, with its resource's service.name. */
export const decodeTraceRequest = (body: Buffer): ReadonlyArray<DecodedSpan & { readonly serviceName: unknown }> =>
  all(body, 1).flatMap((resourceSpans) => {
    const resource = first(resourceSpans.bytes!, 1)?.bytes
    const serviceName = resource === undefined ? undefined : attributes(resource, 1)["service.name"]
    return all(resourceSpans.bytes!, 2).flatMap((scopeSpans) =>
      all(scopeSpans.bytes!, 2).map((span) => {
        const s = span.bytes!
        return {
          serviceName,
          traceId: first(s, 1)?.bytes?.toString("hex") ?? "",
          spanId: first(s, 2)?.bytes?.toString("hex") ?? "",
          parentSpanId: first(s, 4)?.bytes?.toString("hex") ?? "",
          name: first(s, 5)?.bytes?.toString("utf8") ?? "",
          kind: Number(first(s, 6)?.varint ?? 0n),
          attributes: attributes(s, 9),
        }
      }),
    )
  })
