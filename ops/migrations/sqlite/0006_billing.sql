-- The billing projection (see the PostgreSQL migration of the same number).
CREATE TABLE billing_cases
(
    case_id text PRIMARY KEY,
    agency  text NOT NULL,
    state   text NOT NULL
) STRICT;
CREATE TABLE billing_case_months
(
    month   text NOT NULL,
    case_id text NOT NULL,
    agency  text NOT NULL,
    PRIMARY KEY (month, case_id)
) STRICT;
