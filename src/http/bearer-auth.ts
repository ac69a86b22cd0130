/**
 * The admin API's bearer token check. Both sides are hashed first, so the comparison
 * is constant-time (crypto.timingSafeEqual needs equal lengths) and leaks neither the
 * token's content nor its length.
 */
import { createHash, timingSafeEqual } from "node:crypto"
import { Redacted } from "effect"

const digest = (s: string) => createHash("sha256").update(s, "utf8").digest()

/** A checker for `Authorization` header values against the configured token. */
export const bearerTokenCheck = (token: Redacted.Redacted<string>) => {
  const expected = digest(Redacted.value(token))
  return (authorization: string | undefined): boolean => {
    const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(authorization ?? "")
    return match !== null && timingSafeEqual(digest(match[1]!), expected)
  }
}
