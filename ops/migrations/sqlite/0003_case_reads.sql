CREATE TABLE case_reads
(
    id           integer PRIMARY KEY AUTOINCREMENT,
    read_at      text NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    actor_id     text NOT NULL,
    actor_role   text NOT NULL,
    actor_agency text NOT NULL,
    case_id      text NOT NULL,
    route        text NOT NULL,
    outcome      text NOT NULL CHECK (outcome IN ('allowed', 'denied'))
) STRICT;
CREATE INDEX case_reads_by_case ON case_reads (case_id, id);
