-- Group commit (services/src/store/group_commit.rs): the events of several concurrent commands in
-- one statement, so that they share one transaction, one WAL flush and one round trip.
--
-- Each command's events are stored all or none, and each command keeps its own optimistic
-- concurrency check: a command none of whose rows could be stored (another writer appended at its
-- sequence first) is left out, and its number is returned; the others are stored. If a command
-- would be stored only in part (a multi-event command that overlaps another writer's append in
-- part), or two commands of the input claim one row, the statement fails with SQLSTATE LK001 and
-- stores nothing; the caller then writes each command on its own. Rows are inserted in (stream,
-- sequence) order, so that two groups sharing streams take their row locks in one order and
-- cannot deadlock.
CREATE FUNCTION linkage_append_commands(
    commands int[], aggregate_types text[], aggregate_ids text[], sequences bigint[],
    event_types text[], event_versions text[], payloads jsonb[], metadatas jsonb[])
RETURNS int[] LANGUAGE plpgsql AS $$
DECLARE
    refused int[];
    partial int;
BEGIN
    IF EXISTS (SELECT 1 FROM unnest(aggregate_types, aggregate_ids, sequences) AS k(t, i, s)
                GROUP BY t, i, s HAVING count(*) > 1) THEN
        RAISE EXCEPTION 'two commands of one group claim the same sequence' USING ERRCODE = 'LK001';
    END IF;
    WITH input AS (
        SELECT * FROM unnest(commands, aggregate_types, aggregate_ids, sequences, event_types,
                             event_versions, payloads, metadatas)
          AS t(command, aggregate_type, aggregate_id, sequence, event_type, event_version, payload,
               metadata)
    ), stored AS (
        INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                            payload, metadata)
        SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata
          FROM input ORDER BY aggregate_type, aggregate_id, sequence
        ON CONFLICT (aggregate_type, aggregate_id, sequence) DO NOTHING
        RETURNING aggregate_type, aggregate_id, sequence
    ), counted AS (
        SELECT i.command, count(*) AS rows, count(s.sequence) AS stored
          FROM input i LEFT JOIN stored s USING (aggregate_type, aggregate_id, sequence)
         GROUP BY i.command
    )
    SELECT array_agg(command ORDER BY command) FILTER (WHERE stored = 0),
           min(command) FILTER (WHERE stored > 0 AND stored < rows)
      INTO refused, partial
      FROM counted;
    IF partial IS NOT NULL THEN
        RAISE EXCEPTION 'command % of the group would be stored in part', partial
            USING ERRCODE = 'LK001';
    END IF;
    RETURN coalesce(refused, '{}');
END;
$$;
