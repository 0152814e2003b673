-- Each contact of the billing projection is a row of its own (see the PostgreSQL migration
-- 0014_billing_contacts).
CREATE TABLE billing_contacts
(
    case_id     text    NOT NULL,
    sequence    integer NOT NULL,
    event_id    text    NOT NULL,
    activity_id text    NOT NULL,
    at          integer NOT NULL,
    contact     text    NOT NULL,
    PRIMARY KEY (case_id, sequence),
    UNIQUE (case_id, activity_id)
) STRICT;
CREATE INDEX billing_contacts_by_case_time ON billing_contacts (case_id, at);

DELETE FROM billing_cases;
DELETE FROM billing_case_months;
DELETE FROM projection_checkpoints WHERE name = 'billing';
