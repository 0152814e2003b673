-- Linkage event store (PostgreSQL). The first seven columns are exactly postgres-es 0.5's; the rest
-- are added columns with defaults, which postgres-es's INSERT leaves to the database.

-- UUID v7 (RFC 9562): 48-bit Unix milliseconds, version 7, variant 10, random rest.
CREATE OR REPLACE FUNCTION linkage_uuid_v7() RETURNS uuid AS $$
  SELECT encode(
    set_bit(set_bit(
      overlay(uuid_send(gen_random_uuid())
              placing substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
              FROM 1 FOR 6),
      52, 1), 53, 1),
    'hex')::uuid;
$$ LANGUAGE sql VOLATILE;

CREATE TABLE events
(
    aggregate_type    text                         NOT NULL,
    aggregate_id      text                         NOT NULL,
    sequence          bigint CHECK (sequence >= 0) NOT NULL,
    event_type        text                         NOT NULL,
    event_version     text                         NOT NULL,
    payload           jsonb                        NOT NULL,
    metadata          jsonb                        NOT NULL,
    -- The event's identity, assigned when it is stored.
    event_id          uuid        NOT NULL DEFAULT linkage_uuid_v7(),
    -- When the store accepted it (occurred_at, in metadata, is when it happened).
    recorded_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Global order of all events; a reader tails it together with txid (see ARCHITECTURE.md).
    position          bigint GENERATED ALWAYS AS IDENTITY,
    txid              xid8        NOT NULL DEFAULT pg_current_xact_id(),
    -- "<actor>\x1f<Idempotency-Key>" of the request that produced the event, if it had one.
    idempotency_scope text GENERATED ALWAYS AS (metadata ->> 'idempotency_scope') STORED,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE UNIQUE INDEX events_event_id ON events (event_id);
CREATE UNIQUE INDEX events_position ON events (position);
CREATE INDEX events_idempotency_scope ON events (idempotency_scope) WHERE idempotency_scope IS NOT NULL;

-- Nothing stored is ever edited or deleted: corrections are new events (EntryVoided).
CREATE OR REPLACE FUNCTION linkage_events_are_immutable() RETURNS trigger AS $$
BEGIN
  RAISE EXCEPTION 'events are immutable: % refused', TG_OP USING ERRCODE = 'raise_exception';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER events_immutable
  BEFORE UPDATE OR DELETE ON events
  FOR EACH ROW EXECUTE FUNCTION linkage_events_are_immutable();

-- postgres-es's snapshot table; Linkage runs in event-sourced mode and leaves it empty.
CREATE TABLE snapshots
(
    aggregate_type   text                                 NOT NULL,
    aggregate_id     text                                 NOT NULL,
    last_sequence    bigint CHECK (last_sequence >= 0)    NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
    payload          jsonb                                NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);

-- API tokens, stored only as SHA-256 hashes.
CREATE TABLE tokens
(
    token_hash text PRIMARY KEY,
    actor_id   text        NOT NULL,
    role       text        NOT NULL,
    agency_id  text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
