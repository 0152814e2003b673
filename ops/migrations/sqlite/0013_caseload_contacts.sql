-- A case's contacts are rows of their own in the caseload projection (see the PostgreSQL
-- migration 0015_caseload_contacts).
CREATE TABLE caseload_contacts
(
    case_id     text    NOT NULL,
    sequence    integer NOT NULL,
    event_id    text    NOT NULL,
    day         text    NOT NULL,
    with_family integer NOT NULL,
    voided      integer NOT NULL DEFAULT 0,
    PRIMARY KEY (case_id, sequence)
) STRICT;

DELETE FROM caseload_cases;
DELETE FROM projection_checkpoints WHERE name = 'caseloads';
