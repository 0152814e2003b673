-- The billing projection: what TCM billing needs of each case (the recipient's facts and every
-- contact, folded from the case's events), and the months each case has contacts in. Billing
-- lines are evaluated from these with the rules profile in force when a month is pulled.
CREATE TABLE billing_cases
(
    case_id text PRIMARY KEY,
    agency  text  NOT NULL,
    state   jsonb NOT NULL
);
CREATE TABLE billing_case_months
(
    month   text NOT NULL,
    case_id text NOT NULL,
    agency  text NOT NULL,
    PRIMARY KEY (month, case_id)
);
