/** Who requeued which events, when and why: replays change history, so each one leaves a line. */
export const statements: ReadonlyArray<string> = [
  `CREATE TABLE outbox_replay_audit (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    replayed_at timestamptz NOT NULL DEFAULT now(),
    actor       text        NOT NULL,
    origin      text        NOT NULL,
    selection   jsonb       NOT NULL,
    event_count integer     NOT NULL,
    event_ids   bigint[]    NOT NULL
  )`,
]
