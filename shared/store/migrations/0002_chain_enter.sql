-- The worker's side of the chain lock in one round trip: take the job's chain lock (session level; it conflicts
-- with the transaction-level lock seed, resume and set take on the same key), then read the job's epoch and
-- enabled flag. VOLATILE, so the read gets a snapshot taken after the lock was granted: a reseed that committed
-- while this call waited for the lock is seen. The caller releases the lock (scheduler.jobs next_due_at update
-- and pg_advisory_unlock in one statement, or pg_advisory_unlock alone); no row means the job is gone.
CREATE FUNCTION scheduler.chain_enter(key bigint, p_scope text, p_job_id text)
RETURNS TABLE (epoch bigint, enabled boolean)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_lock(key);
    RETURN QUERY SELECT j.epoch, j.enabled FROM scheduler.jobs j WHERE j.scope = p_scope AND j.job_id = p_job_id;
END
$$;
