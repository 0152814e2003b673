-- Finding a case (see the PostgreSQL migration of the same number).
ALTER TABLE caseload_cases ADD COLUMN medicaid_id text;
ALTER TABLE caseload_cases ADD COLUMN given_key text;
ALTER TABLE caseload_cases ADD COLUMN family_key text;
ALTER TABLE caseload_cases ADD COLUMN birth_date text;
ALTER TABLE caseload_cases ADD COLUMN program text;
CREATE INDEX caseload_cases_by_medicaid_id ON caseload_cases (medicaid_id);
CREATE INDEX caseload_cases_by_given_key ON caseload_cases (given_key);
CREATE INDEX caseload_cases_by_family_key ON caseload_cases (family_key);
CREATE INDEX caseload_cases_by_birth_date ON caseload_cases (birth_date);
-- A case manager's cases open or closed, and an agency's cases in case id order (paging).
CREATE INDEX caseload_cases_by_agency_worker ON caseload_cases (agency, worker_id);
CREATE INDEX caseload_cases_by_agency_case ON caseload_cases (agency, case_id);

DELETE FROM caseload_cases;
DELETE FROM projection_checkpoints WHERE name = 'caseloads';

CREATE TABLE case_searches
(
    id           integer PRIMARY KEY AUTOINCREMENT,
    searched_at  text    NOT NULL,
    actor_id     text    NOT NULL,
    actor_role   text    NOT NULL,
    actor_agency text    NOT NULL,
    filters      text    NOT NULL,
    rows         integer NOT NULL,
    full_rows    integer NOT NULL
) STRICT;
