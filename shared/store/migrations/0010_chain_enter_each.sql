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
