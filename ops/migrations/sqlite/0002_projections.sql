CREATE TABLE projection_checkpoints
(
    name       text PRIMARY KEY,
    txid       integer NOT NULL DEFAULT 0,
    position   integer NOT NULL DEFAULT 0,
    events     integer NOT NULL DEFAULT 0,
    error      text,
    updated_at text    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;

CREATE TABLE audit_entries
(
    case_id        text    NOT NULL,
    sequence       integer NOT NULL,
    event_id       text    NOT NULL,
    event_type     text    NOT NULL,
    event_version  text    NOT NULL,
    actor_id       text,
    actor_role     text,
    occurred_at    text,
    recorded_at    text    NOT NULL,
    correlation_id text,
    summary        text    NOT NULL,
    prev_hash      text    NOT NULL,
    hash           text    NOT NULL,
    PRIMARY KEY (case_id, sequence)
) STRICT;
