-- The global log is read in (txid, position) order from a checkpoint: without this index every
-- batch sorted the whole table.
CREATE INDEX events_log_order ON events (txid, position);
