/**
 * Small typed readers for environment variables. Each returns either a value or a
 * sentence saying what is wrong, so that every bad variable can be reported at once.
 */
import { Redacted, Result } from "effect"

export type Env = Readonly<Record<string, string | undefined>>

export interface Setting<A> {
  readonly name: string
  readonly description: string
  /** How the default reads in documentation; absent for required settings. */
  readonly defaultText: string | undefined
  readonly secret: boolean
  readonly read: (raw: string | undefined) => Result.Result<A, string>
}

type Reader<A> = (raw: string) => Result.Result<A, string>

const make = <A>(
  name: string,
  description: string,
  reader: Reader<A>,
  options: { readonly default?: { readonly value: A; readonly text: string }; readonly secret?: boolean },
): Setting<A> => ({
  name,
  description,
  defaultText: options.default?.text,
  secret: options.secret ?? false,
  read: (raw) => {
    const given = raw?.trim()
    if (given === undefined || given === "") {
      return options.default === undefined ? Result.fail("is required but not set") : Result.succeed(options.default.value)
    }
    return reader(given)
  },
})

/** A setting with no default that may be absent. */
const optionalSetting = <A>(name: string, description: string, reader: Reader<A>, secret = false): Setting<A | undefined> => ({
  name,
  description,
  defaultText: "unset",
  secret,
  read: (raw) => {
    const given = raw?.trim()
    return given === undefined || given === "" ? Result.succeed(undefined) : reader(given)
  },
})

const readInt =
  (min: number, max: number): Reader<number> =>
  (raw) => {
    if (!/^-?\d+$/.test(raw)) return Result.fail(`must be a whole number, got "${raw}"`)
    const n = Number(raw)
    return n < min || n > max ? Result.fail(`must be between ${min} and ${max}, got ${n}`) : Result.succeed(n)
  }

const readBoolean: Reader<boolean> = (raw) => {
  const v = raw.toLowerCase()
  if (["true", "1", "yes", "on"].includes(v)) return Result.succeed(true)
  if (["false", "0", "no", "off"].includes(v)) return Result.succeed(false)
  return Result.fail(`must be true or false, got "${raw}"`)
}

const readOneOf =
  <const L extends string>(values: ReadonlyArray<L>): Reader<L> =>
  (raw) => {
    const v = raw.toLowerCase()
    const found = values.find((x) => x === v)
    return found === undefined ? Result.fail(`must be one of ${values.join(", ")}, got "${raw}"`) : Result.succeed(found)
  }

const DURATION = /^(\d+)\s*(ms|s|m|h|d)$/
const UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const

/** Reads "500ms", "30s", "15m", "12h", "7d"; "0" means off. */
export const parseDurationMs = (raw: string): Result.Result<number, string> => {
  if (raw === "0") return Result.succeed(0)
  const m = DURATION.exec(raw.toLowerCase())
  if (m === null) return Result.fail(`must be a duration such as 500ms, 30s, 15m, 12h or 7d, got "${raw}"`)
  return Result.succeed(Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS])
}

export const Settings = {
  int: (name: string, description: string, o: { min: number; max: number; default: number }) =>
    make(name, description, readInt(o.min, o.max), { default: { value: o.default, text: String(o.default) } }),
  boolean: (name: string, description: string, defaultValue: boolean) =>
    make(name, description, readBoolean, { default: { value: defaultValue, text: String(defaultValue) } }),
  oneOf: <const L extends string>(name: string, description: string, values: ReadonlyArray<L>, defaultValue: L) =>
    make(name, description, readOneOf(values), { default: { value: defaultValue, text: defaultValue } }),
  optionalOneOf: <const L extends string>(name: string, description: string, values: ReadonlyArray<L>) =>
    optionalSetting(name, description, readOneOf(values)),
  string: (name: string, description: string, defaultValue: string, check?: (s: string) => string | undefined) =>
    make(
      name,
      description,
      (raw) => {
        const problem = check?.(raw)
        return problem === undefined ? Result.succeed(raw) : Result.fail(problem)
      },
      { default: { value: defaultValue, text: defaultValue } },
    ),
  optionalString: (name: string, description: string) => optionalSetting(name, description, Result.succeed),
  optionalSecret: (name: string, description: string, check?: (s: string) => string | undefined) =>
    optionalSetting(
      name,
      description,
      (raw) => {
        const problem = check?.(raw)
        return problem === undefined ? Result.succeed(Redacted.make(raw)) : Result.fail(problem)
      },
      true,
    ),
  duration: (name: string, description: string, defaultText: string) =>
    make(name, description, parseDurationMs, {
      default: { value: Result.getOrThrow(parseDurationMs(defaultText)), text: defaultText },
    }),
  custom: <A>(name: string, description: string, reader: Reader<A>, o: { default?: { value: A; text: string }; secret?: boolean }) =>
    make(name, description, reader, o),
  optionalCustom: <A>(name: string, description: string, reader: Reader<A>, secret = false) =>
    optionalSetting(name, description, reader, secret),
}
