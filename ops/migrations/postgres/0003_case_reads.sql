-- Every read of case data (HIPAA 164.312(b) audit controls): who, which case, through which
-- route, when, and whether it was allowed. Denied attempts are kept too.
CREATE TABLE case_reads
(
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    read_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor_id     text        NOT NULL,
    actor_role   text        NOT NULL,
    actor_agency text        NOT NULL,
    case_id      text        NOT NULL,
    route        text        NOT NULL,
    outcome      text        NOT NULL CHECK (outcome IN ('allowed', 'denied'))
);
CREATE INDEX case_reads_by_case ON case_reads (case_id, id);
