-- Billing export batches. A batch is recorded by a BillingBatchExported event (aggregate type
-- BillingBatch) whose checksum covers the CSV rendering of its lines; the lines themselves are
-- kept here, in order, immutable, so any batch can be reproduced byte for byte and the next
-- batch of the month can be computed as what changed since.
CREATE TABLE billing_batches
(
    batch_id   text PRIMARY KEY,
    month      text        NOT NULL,
    agency     text        NOT NULL,
    batch_no   bigint      NOT NULL,
    profile    text        NOT NULL,
    lines      bigint      NOT NULL,
    checksum   text        NOT NULL,
    created_at timestamptz NOT NULL,
    UNIQUE (month, agency, batch_no)
);
CREATE TABLE billing_batch_lines
(
    batch_id    text   NOT NULL,
    seq         bigint NOT NULL,
    month       text   NOT NULL,
    agency      text   NOT NULL,
    batch_no    bigint NOT NULL,
    case_id     text   NOT NULL,
    activity_id text   NOT NULL,
    line_id     text   NOT NULL,
    kind        text   NOT NULL,
    adjusts     text,
    fingerprint text   NOT NULL,
    line        jsonb  NOT NULL,
    PRIMARY KEY (batch_id, seq)
);
CREATE INDEX billing_batch_lines_by_case ON billing_batch_lines (month, agency, case_id, batch_no, seq);

CREATE OR REPLACE FUNCTION linkage_batches_are_immutable() RETURNS trigger AS $$
BEGIN
  RAISE EXCEPTION 'exported billing batches are immutable: % refused', TG_OP USING ERRCODE = 'raise_exception';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER billing_batches_immutable BEFORE UPDATE OR DELETE ON billing_batches
  FOR EACH ROW EXECUTE FUNCTION linkage_batches_are_immutable();
CREATE TRIGGER billing_batch_lines_immutable BEFORE UPDATE OR DELETE ON billing_batch_lines
  FOR EACH ROW EXECUTE FUNCTION linkage_batches_are_immutable();
