-- Log followers (projections, relay, event stream) read Case events in (txid, position) order
-- after their checkpoint. The index held every aggregate's events, so a follower whose
-- checkpoint sat before a run of other events (billing batches; in the HTTP benchmark, the raw
-- baseline's rows) stepped over all of them on every read until a Case event came after: reads
-- of 30-45 ms returning nothing, 60,000 rows removed by the filter, several times a second.
-- An index of Case events alone holds only what followers read.
CREATE INDEX events_case_log_order ON events (txid, position) WHERE aggregate_type = 'Case';
DROP INDEX events_log_order;
