-- Each projection batch is applied once across replicas: a batch commits only if the checkpoint
-- it was read after is still current (see services::projector). `applied_by` names the replica
-- that committed the last batch, for `linkage projections status`.
ALTER TABLE projection_checkpoints ADD COLUMN applied_by text;

-- An export cannot carry a line twice, whatever the code that builds it does: an activity is an
-- original line in at most one batch of its month; a void or a replacement names the line it
-- reverses or corrects, which must exist, and a line is voided at most once.
ALTER TABLE billing_batch_lines ADD CONSTRAINT billing_batch_lines_line_id UNIQUE (line_id);
ALTER TABLE billing_batch_lines ADD CONSTRAINT billing_batch_lines_kind
    CHECK (kind IN ('original', 'void', 'replacement')
           AND (kind = 'original') = (adjusts IS NULL));
ALTER TABLE billing_batch_lines ADD CONSTRAINT billing_batch_lines_adjusts
    FOREIGN KEY (adjusts) REFERENCES billing_batch_lines (line_id);
CREATE UNIQUE INDEX billing_batch_lines_one_original
    ON billing_batch_lines (month, activity_id) WHERE kind = 'original';
CREATE UNIQUE INDEX billing_batch_lines_one_void
    ON billing_batch_lines (adjusts) WHERE kind = 'void';
CREATE UNIQUE INDEX billing_batch_lines_one_replacement
    ON billing_batch_lines (adjusts) WHERE kind = 'replacement';
