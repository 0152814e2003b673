-- The caseload projection: each case's folded state, by worker and agency. Figures that depend
-- on today's date (days since last contact, overdue flags) are derived when read.
CREATE TABLE caseload_cases
(
    case_id   text PRIMARY KEY,
    agency    text    NOT NULL,
    worker_id text,
    open      boolean NOT NULL,
    version   bigint  NOT NULL,
    state     jsonb   NOT NULL
);
CREATE INDEX caseload_cases_by_worker ON caseload_cases (worker_id) WHERE open;
CREATE INDEX caseload_cases_by_agency ON caseload_cases (agency) WHERE open;
