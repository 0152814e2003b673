-- SQLite reads the log by position alone, which events_position already indexes. This file keeps
-- the two stores' migration numbers in step.
SELECT 1;
