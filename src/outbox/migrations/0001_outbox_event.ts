/** The outbox table and the indexes the claim protocol reads. */
export const statements: ReadonlyArray<string> = [
  `CREATE TABLE outbox_event (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        uuid        NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    dedup_key       text        NOT NULL UNIQUE CHECK (btrim(dedup_key) <> ''),
    event_type      text        NOT NULL CHECK (event_type <> ''),
    aggregate_key   text,
    payload         jsonb       NOT NULL,
    headers         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    request_id      text,
    traceparent     text,
    status          text        NOT NULL DEFAULT 'NEW' CHECK (status IN ('NEW', 'SENT', 'FAILED', 'DEAD')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    dead_reason     text,
    locked_by       text,
    locked_until    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    kafka_topic     text,
    kafka_partition integer,
    kafka_offset    bigint
  )`,
  // The claim walks pending rows oldest first; a partial index stays small however much
  // SENT history the table keeps.
  `CREATE INDEX outbox_event_pending_idx ON outbox_event (id) WHERE status IN ('NEW', 'FAILED')`,
  // Per-key ordering asks "is an older pending row of this key still waiting?" for each candidate.
  `CREATE INDEX outbox_event_pending_key_idx ON outbox_event (aggregate_key, id)
     WHERE status IN ('NEW', 'FAILED') AND aggregate_key IS NOT NULL`,
  // Dead-letter listing and replay filter DEAD rows by type and time.
  `CREATE INDEX outbox_event_dead_idx ON outbox_event (event_type, created_at) WHERE status = 'DEAD'`,
]
