-- The caseload projection kept each case's whole folded state, every contact with its note and
-- an entry per event, in one jsonb document that each batch rewrote: the cost of a batch grew
-- with the cases' age. In the HTTP benchmark (16 connections posting contacts) running the
-- caseload projection alone cut the commands' rate from 75-86% of a raw INSERT to 44-53%. Now a
-- case's contacts are rows of their own (what caseload views need of them: the day, whether the
-- child or a guardian took part, whether an entry voided it) and the state holds the rest.
CREATE TABLE caseload_contacts
(
    case_id     text    NOT NULL,
    -- The logging event's place in its case's stream (a void names it) and its id.
    sequence    bigint  NOT NULL,
    event_id    text    NOT NULL,
    -- The contact's date (UTC), YYYY-MM-DD.
    day         text    NOT NULL,
    with_family boolean NOT NULL,
    voided      boolean NOT NULL DEFAULT false,
    PRIMARY KEY (case_id, sequence)
);

-- The states written before hold their contacts: the projection starts over from the log.
DELETE FROM caseload_cases;
DELETE FROM projection_checkpoints WHERE name = 'caseloads';
