CREATE TABLE caseload_cases
(
    case_id   text PRIMARY KEY,
    agency    text    NOT NULL,
    worker_id text,
    open      integer NOT NULL,
    version   integer NOT NULL,
    state     text    NOT NULL
) STRICT;
CREATE INDEX caseload_cases_by_worker ON caseload_cases (worker_id) WHERE open;
CREATE INDEX caseload_cases_by_agency ON caseload_cases (agency) WHERE open;
