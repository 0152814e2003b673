-- Each projection batch is applied once (see the PostgreSQL migration of the same number).
ALTER TABLE projection_checkpoints ADD COLUMN applied_by text;

-- An export cannot carry a line twice. SQLite cannot add constraints to a table, so the rules
-- the PostgreSQL migration states as constraints are unique indexes and a trigger here.
CREATE UNIQUE INDEX billing_batch_lines_line_id ON billing_batch_lines (line_id);
CREATE UNIQUE INDEX billing_batch_lines_one_original
    ON billing_batch_lines (month, activity_id) WHERE kind = 'original';
CREATE UNIQUE INDEX billing_batch_lines_one_void
    ON billing_batch_lines (adjusts) WHERE kind = 'void';
CREATE UNIQUE INDEX billing_batch_lines_one_replacement
    ON billing_batch_lines (adjusts) WHERE kind = 'replacement';
CREATE TRIGGER billing_batch_lines_adjust_a_line BEFORE INSERT ON billing_batch_lines
WHEN NEW.kind NOT IN ('original', 'void', 'replacement')
  OR (NEW.kind = 'original') <> (NEW.adjusts IS NULL)
  OR (NEW.adjusts IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM billing_batch_lines WHERE line_id = NEW.adjusts))
BEGIN
    SELECT RAISE(ABORT, 'a billing line must be an original, or adjust a line already exported');
END;
