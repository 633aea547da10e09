-- The chain locks of a batch of slots claimed ahead together (shared.lead_batch), in one call: take each job's
-- chain lock on this session in key order (the order batch seeding takes them in, so two batches never wait on
-- each other in a cycle; a key listed twice is taken twice, and is released twice), then read each job's epoch
-- and enabled flag with a snapshot taken after the last lock was granted, as scheduler.chain_enter does for one.
-- One row per input position `ord` (1-based); epoch NULL: the job is gone (its lock is held all the same).
CREATE FUNCTION scheduler.chain_enter_each(keys bigint[], p_scope text, p_job_ids text[])
RETURNS TABLE (ord bigint, epoch bigint, enabled boolean)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    k bigint;
BEGIN
    FOREACH k IN ARRAY ARRAY(SELECT x FROM unnest(keys) AS x ORDER BY x) LOOP
        PERFORM pg_advisory_lock(k);
    END LOOP;
    RETURN QUERY
        SELECT i.ord, j.epoch, j.enabled
        FROM unnest(p_job_ids) WITH ORDINALITY AS i(job_id, ord)
        LEFT JOIN scheduler.jobs j ON j.scope = p_scope AND j.job_id = i.job_id;
END
$$;

-- The run locks of a batch of runs starting at one slot on one session (shared.slot_batch): for each owner in
-- order, the first of its keys (`keys[i]` belongs to `owners[i]`, an owner's keys listed together, in order) that
-- no earlier owner of this call took and that pg_try_advisory_lock grants. A session lock is re-entrant, so the
-- call itself keeps two owners of one session from sharing a key. One row per owner that took a key.
CREATE OR REPLACE FUNCTION scheduler.try_lock_each(owners int[], keys bigint[])
RETURNS TABLE (owner int, key bigint)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    i int;
    cur int := NULL;
    got boolean := false;
    taken bigint[] := '{}';
BEGIN
    FOR i IN 1 .. coalesce(array_length(keys, 1), 0) LOOP
        IF owners[i] IS DISTINCT FROM cur THEN
            cur := owners[i];
            got := false;
        END IF;
        IF NOT got AND NOT (keys[i] = ANY (taken)) AND pg_try_advisory_lock(keys[i]) THEN
            taken := taken || keys[i];
            got := true;
            owner := cur;
            key := keys[i];
            RETURN NEXT;
        END IF;
    END LOOP;
END
$$;
