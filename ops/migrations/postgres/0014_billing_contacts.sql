-- The billing projection kept every contact of a case inside the case's one jsonb state, so each
-- batch read, parsed, rewrote and recompressed the whole history of every case it touched: the
-- cost of a batch grew with the cases' age, not with the batch. In the HTTP benchmark (16
-- connections posting contacts) running the billing projection alone cut the commands' rate from
-- 75-86% of a raw INSERT to 39-43%. Now each contact is a row of its own and the case's state is
-- its header (recipient facts, transitions, reopenings), so a batch writes what it holds.
CREATE TABLE billing_contacts
(
    case_id     text   NOT NULL,
    -- The logging event's place in its case's stream (a void names it) and its id.
    sequence    bigint NOT NULL,
    event_id    text   NOT NULL,
    activity_id text   NOT NULL,
    -- When the contact happened, in seconds since the epoch: a month reads the rows of its window.
    at          bigint NOT NULL,
    -- A `projections::billing::StoredContact`; `voided` turns true when an entry voids it.
    contact     jsonb  NOT NULL,
    PRIMARY KEY (case_id, sequence),
    -- One row per activity: a contact logged again under an activity id the case holds is not
    -- a second contact (as `BillingCase::apply` decides in memory).
    UNIQUE (case_id, activity_id)
);
CREATE INDEX billing_contacts_by_case_time ON billing_contacts (case_id, at);

-- The states written before hold their contacts: the projection starts over from the log.
DELETE FROM billing_cases;
DELETE FROM billing_case_months;
DELETE FROM projection_checkpoints WHERE name = 'billing';
