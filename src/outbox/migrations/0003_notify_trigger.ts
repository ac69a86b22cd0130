/**
 * A wake-up for the relay on every insert. Statement-level, so a batch insert of a
 * thousand rows sends one notification, not a thousand; PostgreSQL delivers it at
 * commit (never for a rolled-back insert) and folds duplicates within a transaction.
 */

/** The channel the trigger notifies and the relay listens on. Part of the schema: never rename it in place. */
export const INSERT_CHANNEL = "outbox_event_inserted"

export const statements: ReadonlyArray<string> = [
  `CREATE FUNCTION outbox_event_notify_insert() RETURNS trigger LANGUAGE plpgsql AS $$
   BEGIN
     PERFORM pg_notify('${INSERT_CHANNEL}', '');
     RETURN NULL;
   END
   $$`,
  `CREATE TRIGGER outbox_event_notify_insert
     AFTER INSERT ON outbox_event
     FOR EACH STATEMENT EXECUTE FUNCTION outbox_event_notify_insert()`,
]
