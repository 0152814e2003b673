-- Finding a case (GET /v1/cases) and refusing a duplicate intake: the caseload projection keeps
-- what a case is searched by, each with an index, so a search reads index ranges, never every
-- case. Names are stored as search keys (case and accents folded by the application), compared
-- by prefix (text_pattern_ops serves LIKE 'prefix%' whatever the database's collation).
ALTER TABLE caseload_cases ADD COLUMN medicaid_id text;
ALTER TABLE caseload_cases ADD COLUMN given_key text;
ALTER TABLE caseload_cases ADD COLUMN family_key text;
ALTER TABLE caseload_cases ADD COLUMN birth_date text;
ALTER TABLE caseload_cases ADD COLUMN program text;
CREATE INDEX caseload_cases_by_medicaid_id ON caseload_cases (medicaid_id);
CREATE INDEX caseload_cases_by_given_key ON caseload_cases (given_key text_pattern_ops);
CREATE INDEX caseload_cases_by_family_key ON caseload_cases (family_key text_pattern_ops);
CREATE INDEX caseload_cases_by_birth_date ON caseload_cases (birth_date);
-- A case manager's cases open or closed, and an agency's cases in case id order (paging).
CREATE INDEX caseload_cases_by_agency_worker ON caseload_cases (agency, worker_id);
CREATE INDEX caseload_cases_by_agency_case ON caseload_cases (agency, case_id);

-- The new columns are filled by projecting the log again: the projection starts over.
DELETE FROM caseload_cases;
DELETE FROM projection_checkpoints WHERE name = 'caseloads';

-- Every search (HIPAA 164.312(b)): who searched, with which filters, and how many cases came back.
CREATE TABLE case_searches
(
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    searched_at  timestamptz NOT NULL,
    actor_id     text        NOT NULL,
    actor_role   text        NOT NULL,
    actor_agency text        NOT NULL,
    filters      text        NOT NULL,
    rows         bigint      NOT NULL,
    full_rows    bigint      NOT NULL
);
