-- The FHIR projection (issue 14): see the PostgreSQL migration of the same name.
CREATE TABLE fhir_cases
(
    case_id text PRIMARY KEY,
    agency  text NOT NULL,
    state   text NOT NULL
) STRICT;
CREATE TABLE fhir_tasks
(
    referral_id  text PRIMARY KEY,
    case_id      text    NOT NULL,
    agency       text    NOT NULL,
    worker_id    text,
    provider_id  text    NOT NULL,
    provider_name text,
    status       text    NOT NULL,
    version      integer NOT NULL,
    last_updated text    NOT NULL
) STRICT;
CREATE INDEX fhir_tasks_by_provider ON fhir_tasks (agency, provider_id, referral_id);
CREATE INDEX fhir_tasks_by_case ON fhir_tasks (case_id);
