/**
 * What an outbox row id may be when a person types one (admin API, CLI): the table's id is
 * a PostgreSQL bigint, so anything past its range is refused here, as bad input, instead of
 * failing in the database and reading like an outage.
 */

export const MAX_ROW_ID = 9_223_372_036_854_775_807n

/** Why `id` is not a row id, or undefined when it is one. Numbers past 2^53 lose digits in JSON: those must come as strings. */
export const rowIdProblem = (id: unknown): string | undefined => {
  const expected = `must be an outbox row id (a whole number from 1 to ${MAX_ROW_ID}), got ${JSON.stringify(id)}`
  if (typeof id === "number") {
    if (!Number.isSafeInteger(id) || id < 1) {
      return Number.isInteger(id) && id > 0 ? `${expected}; an id above ${Number.MAX_SAFE_INTEGER} must be given as a string` : expected
    }
    return undefined
  }
  if (typeof id !== "string" || !/^[1-9]\d*$/.test(id) || id.length > 19 || BigInt(id) > MAX_ROW_ID) return expected
  return undefined
}
