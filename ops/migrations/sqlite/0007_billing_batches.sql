-- Billing export batches (see the PostgreSQL migration of the same number).
CREATE TABLE billing_batches
(
    batch_id   text PRIMARY KEY,
    month      text    NOT NULL,
    agency     text    NOT NULL,
    batch_no   integer NOT NULL,
    profile    text    NOT NULL,
    lines      integer NOT NULL,
    checksum   text    NOT NULL,
    created_at text    NOT NULL,
    UNIQUE (month, agency, batch_no)
) STRICT;
CREATE TABLE billing_batch_lines
(
    batch_id    text    NOT NULL,
    seq         integer NOT NULL,
    month       text    NOT NULL,
    agency      text    NOT NULL,
    batch_no    integer NOT NULL,
    case_id     text    NOT NULL,
    activity_id text    NOT NULL,
    line_id     text    NOT NULL,
    kind        text    NOT NULL,
    adjusts     text,
    fingerprint text    NOT NULL,
    line        text    NOT NULL,
    PRIMARY KEY (batch_id, seq)
) STRICT;
CREATE INDEX billing_batch_lines_by_case ON billing_batch_lines (month, agency, case_id, batch_no, seq);
CREATE TRIGGER billing_batches_no_update BEFORE UPDATE ON billing_batches
BEGIN
    SELECT RAISE(ABORT, 'exported billing batches are immutable: UPDATE refused');
END;
CREATE TRIGGER billing_batches_no_delete BEFORE DELETE ON billing_batches
BEGIN
    SELECT RAISE(ABORT, 'exported billing batches are immutable: DELETE refused');
END;
CREATE TRIGGER billing_batch_lines_no_update BEFORE UPDATE ON billing_batch_lines
BEGIN
    SELECT RAISE(ABORT, 'exported billing batches are immutable: UPDATE refused');
END;
CREATE TRIGGER billing_batch_lines_no_delete BEFORE DELETE ON billing_batch_lines
BEGIN
    SELECT RAISE(ABORT, 'exported billing batches are immutable: DELETE refused');
END;
