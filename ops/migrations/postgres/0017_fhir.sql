-- The FHIR projection (issue 14): each case's folded state without its contacts (what the
-- referral resources are rendered from), and one row per referral for the searches a recipient
-- makes (its Tasks, by status, by time of change). Rows are found by referral id; pages run in
-- referral id order, which a change does not move.
CREATE TABLE fhir_cases
(
    case_id text PRIMARY KEY,
    agency  text  NOT NULL,
    state   jsonb NOT NULL
);
CREATE TABLE fhir_tasks
(
    referral_id  text PRIMARY KEY,
    case_id      text   NOT NULL,
    agency       text   NOT NULL,
    -- The case's case manager (a case manager sees their own cases' referrals).
    worker_id    text,
    provider_id  text   NOT NULL,
    provider_name text,
    -- Task.status, as served.
    status       text   NOT NULL,
    version      bigint NOT NULL,
    -- meta.lastUpdated, RFC 3339 UTC with microseconds (ordered as text, as on SQLite).
    last_updated text   NOT NULL
);
CREATE INDEX fhir_tasks_by_provider ON fhir_tasks (agency, provider_id, referral_id);
CREATE INDEX fhir_tasks_by_case ON fhir_tasks (case_id);
