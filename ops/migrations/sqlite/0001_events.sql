-- Linkage event store (embedded SQLite). The first seven columns are exactly sqlite-es 0.5's; the
-- rest are added columns with defaults, which sqlite-es's INSERT leaves to the database.

CREATE TABLE events
(
    aggregate_type    text                          NOT NULL,
    aggregate_id      text                          NOT NULL,
    sequence          integer CHECK (sequence >= 0) NOT NULL,
    event_type        text                          NOT NULL,
    event_version     text                          NOT NULL,
    payload           text                          NOT NULL,
    metadata          text                          NOT NULL,
    -- UUID v7 (RFC 9562): 48-bit Unix milliseconds, version 7, variant 10, random rest.
    -- 'now' is the same for every use within one statement step, so both halves agree.
    event_id          text NOT NULL DEFAULT (
        lower(
            substr(printf('%012x', CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)), 1, 8) || '-' ||
            substr(printf('%012x', CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)), 9, 4) || '-7' ||
            substr(hex(randomblob(2)), 2, 3) || '-' ||
            substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2, 3) || '-' ||
            hex(randomblob(6))
        )
    ),
    recorded_at       text NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    -- Global order of all events: the rowid, copied by the trigger below. One writer at a time
    -- makes it gap-free and visible in order.
    position          integer,
    idempotency_scope text GENERATED ALWAYS AS (json_extract(metadata, '$.idempotency_scope')) VIRTUAL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
) STRICT;

CREATE UNIQUE INDEX events_event_id ON events (event_id);
CREATE UNIQUE INDEX events_position ON events (position);
CREATE INDEX events_idempotency_scope ON events (idempotency_scope) WHERE idempotency_scope IS NOT NULL;

CREATE TRIGGER events_assign_position AFTER INSERT ON events
BEGIN
    UPDATE events SET position = NEW.rowid WHERE rowid = NEW.rowid;
END;

-- Nothing stored is ever edited or deleted (the position assignment above is the one update).
CREATE TRIGGER events_immutable_update BEFORE UPDATE ON events WHEN OLD.position IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'events are immutable: UPDATE refused');
END;

CREATE TRIGGER events_immutable_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are immutable: DELETE refused');
END;

CREATE TABLE snapshots
(
    aggregate_type   text                                  NOT NULL,
    aggregate_id     text                                  NOT NULL,
    last_sequence    integer CHECK (last_sequence >= 0)    NOT NULL,
    current_snapshot integer CHECK (current_snapshot >= 0) NOT NULL,
    payload          text                                  NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
) STRICT;

CREATE TABLE tokens
(
    token_hash text PRIMARY KEY,
    actor_id   text NOT NULL,
    role       text NOT NULL,
    agency_id  text NOT NULL,
    created_at text NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    revoked_at text
) STRICT;
