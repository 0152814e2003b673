-- Projections: each has a durable checkpoint in the global log, updated in the same transaction
-- as its rows, so a projection applies every event exactly once in effect.
CREATE TABLE projection_checkpoints
(
    name       text PRIMARY KEY,
    txid       bigint      NOT NULL DEFAULT 0,
    position   bigint      NOT NULL DEFAULT 0,
    events     bigint      NOT NULL DEFAULT 0,
    -- Set when the projection stopped on an event it could not apply; cleared by a rebuild.
    error      text,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The audit trail: one entry per event, hash-chained per case.
CREATE TABLE audit_entries
(
    case_id        text        NOT NULL,
    sequence       bigint      NOT NULL,
    event_id       text        NOT NULL,
    event_type     text        NOT NULL,
    event_version  text        NOT NULL,
    actor_id       text,
    actor_role     text,
    occurred_at    text,
    recorded_at    timestamptz NOT NULL,
    correlation_id text,
    summary        text        NOT NULL,
    prev_hash      text        NOT NULL,
    hash           text        NOT NULL,
    PRIMARY KEY (case_id, sequence)
);
