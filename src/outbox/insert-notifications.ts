/**
 * Wake-ups from the insert trigger (migration 0003), on a connection of its own that
 * LISTENs. A lost connection is re-established with the backoff schedule; polling
 * covers the gap, and each (re)connect emits one wake-up for inserts missed meanwhile.
 */
import { PgClient } from "@effect/sql-pg"
import { Effect, Stream } from "effect"
import { backoffSchedule } from "../domain/backoff.ts"
import { INSERT_CHANNEL } from "./migrations/0003_notify_trigger.ts"
import { sqlErrorMessage } from "./sql-error.ts"

export const insertWakeUps: Stream.Stream<void, never, PgClient.PgClient> = Stream.unwrap(
  Effect.gen(function* () {
    const pg = yield* PgClient.PgClient
    // Holds one pool connection for as long as the stream runs.
    const notifications = yield* pg.listen(INSERT_CHANNEL)
    yield* Effect.logDebug("listening for outbox inserts").pipe(Effect.annotateLogs({ channel: INSERT_CHANNEL }))
    return Stream.concat(Stream.succeed(undefined), Stream.fromQueue(notifications).pipe(Stream.as(undefined)))
  }),
).pipe(
  Stream.tapError((e) =>
    Effect.logWarning("LISTEN connection lost; reconnecting with backoff, polling meanwhile").pipe(
      Effect.annotateLogs({ channel: INSERT_CHANNEL, error: sqlErrorMessage(e) }),
    ),
  ),
  // The schedule restarts from its base after each successful reconnect (the first wake-up).
  // It never ends, so no SqlError gets past it: the relay is never stopped by its wake-ups.
  Stream.retry(backoffSchedule({ baseMs: 250, maxMs: 10_000 })),
  Stream.orDie,
)
